import Foundation
import TestSupport
import Testing

@testable import Dashboard

/// The one escaping type: whatever a database value holds, it reaches a page as text.
@Suite struct HTMLTests {
    static let alphabet = Array("<>&\"'=/ abc\u{0}é😀\n;#x")

    /// Undoes `HTML.escape`, to check that nothing was lost on the way.
    func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    @Test func interpolatedTextNeverCarriesMarkupAndLosesNothing() {
        var random = SplitMix64(state: 0x5eed_da5b)
        for _ in 0..<2_000 {
            let length = Int(random.next() % 40)
            let value = String(
                (0..<length).map { _ in Self.alphabet[Int(random.next() % UInt64(Self.alphabet.count))] })
            let page: HTML = "<td title=\"\(value)\">\(value)</td>"
            let inner = String(page.text.dropFirst("<td title=\"".count).prefix { $0 != "\"" })
            #expect(!inner.contains("<") && !inner.contains(">") && !inner.contains("'"))
            #expect(unescape(inner) == value)
            #expect(page.text.filter { $0 == "<" }.count == 2, "only the program's own tags: \(page.text)")
        }
    }

    @Test func theClassicPayloadIsText() {
        let error = "<img src=x onerror=alert(1)>"
        let cell: HTML = "<td>\(error)</td>"
        #expect(cell.text == "<td>&lt;img src=x onerror=alert(1)&gt;</td>")
    }

    @Test func fragmentsNestWithoutBeingEscapedTwice() {
        let name = "a&b"
        let inner: HTML = "<b>\(name)</b>"
        let outer: HTML = "<p>\(inner) \([inner, inner])</p>"
        #expect(outer.text == "<p><b>a&amp;b</b> <b>a&amp;b</b><b>a&amp;b</b></p>")
    }

    @Test func urlComponentsRoundTrip() {
        var random = SplitMix64(state: 42)
        for _ in 0..<500 {
            let value = String(
                (0..<Int(random.next() % 20)).map { _ in
                    Self.alphabet[Int(random.next() % UInt64(Self.alphabet.count))]
                })
            let encoded = HTML.urlComponent(value)
            #expect(encoded.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._~%".contains($0)) })
            #expect(encoded.removingPercentEncoding == value)
        }
    }

    @Test func formsDecodeAsBrowsersSendThem() {
        let form = DashboardServer.parseForm("csrf=ab12&queue=a+b%26c%3D&do=run+now&empty=&flag")
        #expect(form == ["csrf": "ab12", "queue": "a b&c=", "do": "run now", "empty": "", "flag": ""])
    }

    @Test func secretsCompareOnlyWhenEqual() {
        #expect(constantTimeEqual(Array("abc".utf8), Array("abc".utf8)))
        #expect(!constantTimeEqual(Array("abc".utf8), Array("abd".utf8)))
        #expect(!constantTimeEqual(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!constantTimeEqual([], Array("a".utf8)))
    }
}
