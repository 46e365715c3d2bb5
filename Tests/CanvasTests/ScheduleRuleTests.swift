import Foundation
import PGCanvas
import Testing

/// Next-fire computation as a pure function, across DST changes.
@Suite struct ScheduleRuleTests {
    func utc(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }
    let newYork = TimeZone(identifier: "America/New_York")!
    let paris = TimeZone(identifier: "Europe/Paris")!

    @Test func nineOnWeekdaysInNewYorkFollowsTheClockAcrossSpringForward() throws {
        let cron = try CronExpression("0 9 * * MON-FRI", timeZone: newYork)
        // Friday 6 March 2026, 9:00 EST = 14:00 UTC; DST starts Sunday 8 March; Monday 9:00 EDT = 13:00 UTC.
        #expect(cron.nextFire(after: utc("2026-03-05T15:00:00Z")) == utc("2026-03-06T14:00:00Z"))
        #expect(cron.nextFire(after: utc("2026-03-06T14:00:00Z")) == utc("2026-03-09T13:00:00Z"))
    }

    @Test func aWallClockTimeSkippedBySpringForwardDoesNotFire() throws {
        // 02:30 does not exist in Paris on 29 March 2026: the next 02:30 is on the 30th (00:30 UTC).
        let cron = try CronExpression("30 2 * * *", timeZone: paris)
        #expect(cron.nextFire(after: utc("2026-03-28T02:00:00Z")) == utc("2026-03-30T00:30:00Z"))
    }

    @Test func autumnBackFiresAtEachOccurrenceOfARepeatedTime() throws {
        // 02:15 happens twice in Paris on 25 October 2026: 00:15 UTC (CEST) and 01:15 UTC (CET).
        let cron = try CronExpression("15 2 * * *", timeZone: paris)
        let first = try #require(cron.nextFire(after: utc("2026-10-24T12:00:00Z")))
        #expect(first == utc("2026-10-25T00:15:00Z"))
        #expect(cron.nextFire(after: first) == utc("2026-10-25T01:15:00Z"))
    }

    @Test func fieldsTakeRangesStepsListsAndNames() throws {
        let cron = try CronExpression("*/15 8-10 1,15 JAN-MAR *")
        #expect(cron.nextFire(after: utc("2026-01-01T08:07:00Z")) == utc("2026-01-01T08:15:00Z"))
        #expect(cron.nextFire(after: utc("2026-01-01T10:45:00Z")) == utc("2026-01-15T08:00:00Z"))
        #expect(cron.nextFire(after: utc("2026-03-15T10:45:00Z")) == utc("2027-01-01T08:00:00Z"))
        // Both day fields restricted: either matches (Vixie cron).
        let either = try CronExpression("0 0 13 * FRI")
        #expect(either.nextFire(after: utc("2026-11-25T00:00:00Z")) == utc("2026-11-27T00:00:00Z"))
        #expect(
            try CronExpression("0 0 * * 7").nextFire(after: utc("2026-11-25T00:00:00Z")) == utc("2026-11-29T00:00:00Z"))
    }

    @Test(arguments: ["61 * * * *", "* * *", "*/0 * * * *", "5-1 * * * *", "* * 32 * *", "* * * FOO *", ""])
    func invalidExpressionsAreRefusedWithTheField(text: String) {
        #expect(throws: CanvasError.self) { try CronExpression(text) }
    }

    @Test func intervalsParseWithUnitsAndRefuseZeroOrNegative() throws {
        #expect(try ScheduleRule.parseInterval("30s") == 30)
        #expect(try ScheduleRule.parseInterval("5m") == 300)
        #expect(try ScheduleRule.parseInterval("2h") == 7200)
        #expect(try ScheduleRule.parseInterval("1d") == 86_400)
        #expect(try ScheduleRule.parseInterval("0.5") == 0.5)
        #expect(try ScheduleRule.parseInterval("0.01s") == 0.01)
        #expect(try ScheduleRule.parseInterval("3650d") == 315_360_000)
        for bad in ["0s", "-5m", "abc", "", "5x", "1e20s", "0.001s", "3651d", "nan", "inf"] {
            #expect(throws: CanvasError.self) { try ScheduleRule.parseInterval(bad) }
        }
    }

    @Test func intervalTicksCountFromTheirAnchor() {
        let anchor = utc("2026-01-01T00:00:00Z")
        let rule = ScheduleRule.every(30)
        #expect(rule.next(after: anchor.addingTimeInterval(95), anchor: anchor) == anchor.addingTimeInterval(120))
    }

    @Test(arguments: ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 FEB *"])
    func expressionsThatNeverFireAreRefused(text: String) {
        #expect(throws: CanvasError.self) { try CronExpression(text) }
    }

    @Test func aLeapDayFires() throws {
        #expect(
            try CronExpression("0 0 29 2 *").nextFire(after: utc("2026-03-01T00:00:00Z")) == utc("2028-02-29T00:00:00Z")
        )
    }
}
