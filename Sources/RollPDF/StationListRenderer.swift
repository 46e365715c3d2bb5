import CCairo
import Foundation

/// Draws station lists as PDF with cairo: US letter landscape, a table of row number,
/// "Voter Name" and "Signature", light-blue header and number cells, alternating white and
/// light-grey rows, 40 rows a page, and a footer when there is more than one page.
public enum StationListRenderer {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    // US letter, landscape, in points.
    static let pageWidth = 792.0
    static let pageHeight = 612.0
    static let margin = 36.0
    static let titleHeight = 24.0
    static let rowHeight = 12.0
    static let footerGap = 18.0
    static let numberWidth = 36.0
    static let nameWidth = 330.0
    static let fontSize = 8.5
    static let font = "DejaVu Sans"

    /// Loads cairo's font machinery (fontconfig, the DejaVu faces) by drawing a page into memory,
    /// so that a pool process's first list is as fast as the others.
    public static func warmUp() {
        guard
            let surface = cairo_pdf_surface_create_for_stream(
                { _, _, _ in CAIRO_STATUS_SUCCESS }, nil, pageWidth, pageHeight)
        else { return }
        defer { cairo_surface_destroy(surface) }
        guard let cr = cairo_create(surface) else { return }
        defer { cairo_destroy(cr) }
        for weight in [CAIRO_FONT_WEIGHT_NORMAL, CAIRO_FONT_WEIGHT_BOLD] {
            cairo_select_font_face(cr, font, CAIRO_FONT_SLANT_NORMAL, weight)
            cairo_set_font_size(cr, fontSize)
            text(cr, "Warm-up Zoë Łukasz Nguyễn 0123456789", x: margin, baseline: margin)
        }
        cairo_show_page(cr)
        cairo_surface_finish(surface)
    }

    /// Writes the document to `directory/fileName` atomically: drawn into a temporary file in
    /// the same folder, then renamed, so a crash never leaves a half-written list under the
    /// final name.
    /// - Returns: the number of pages written.
    @discardableResult
    public static func write(_ document: StationListDocument, to directory: URL) throws -> Int {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let final = directory.appendingPathComponent(document.fileName)
        let temporary = directory.appendingPathComponent(
            ".\(document.fileName).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        do {
            try render(document, to: temporary.path)
            guard rename(temporary.path, final.path) == 0 else {
                throw Failure(
                    description:
                        "cannot move \(temporary.lastPathComponent) to \(final.path): \(String(cString: strerror(errno)))"
                )
            }
        } catch {
            unlink(temporary.path)
            throw error
        }
        return document.pageCount
    }

    static func render(_ document: StationListDocument, to path: String) throws {
        guard let surface = cairo_pdf_surface_create(path, pageWidth, pageHeight) else {
            throw Failure(description: "cairo could not create \(path)")
        }
        defer { cairo_surface_destroy(surface) }
        cairo_pdf_surface_set_metadata(
            surface, CAIRO_PDF_METADATA_TITLE,
            "\(document.centerName) (\(document.centerID)) station \(document.stationID) voter list")
        cairo_pdf_surface_set_metadata(surface, CAIRO_PDF_METADATA_CREATOR, "pgcanvas")
        guard let cr = cairo_create(surface) else { throw Failure(description: "cairo could not draw") }
        defer { cairo_destroy(cr) }
        // Font faces made once per document, not looked up again for every page.
        let regular = cairo_toy_font_face_create(font, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL)
        let bold = cairo_toy_font_face_create(font, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD)
        defer {
            cairo_font_face_destroy(regular)
            cairo_font_face_destroy(bold)
        }
        let fonts = Fonts(regular: regular, bold: bold)

        // What every full page has in common (title, header row, backgrounds, grid) is drawn once
        // into a recording surface that each full page paints: cairo writes it into the PDF once,
        // as a form XObject, and each page refers to it, instead of formatting and compressing the
        // same 70 paths and 4 texts again on every page.
        let full = StationListDocument.rowsPerPage
        let template =
            document.voterNames.count >= full ? recordedFrame(fonts: fonts, document: document, rows: full) : nil
        defer { if let template { cairo_surface_destroy(template) } }

        let names = document.voterNames
        for page in 0..<document.pageCount {
            let first = page * full
            let rows = names[min(first, names.count)..<min(first + full, names.count)]
            if rows.count == full, let template {
                cairo_set_source_surface(cr, template, 0, 0)
                cairo_paint(cr)
            } else {
                drawFrame(cr, fonts: fonts, document: document, rows: rows.count)
            }
            drawRows(cr, fonts: fonts, document: document, page: page + 1, firstNumber: first + 1, names: rows)
            cairo_show_page(cr)
        }
        cairo_surface_finish(surface)
        let status = cairo_surface_status(surface)
        if status != CAIRO_STATUS_SUCCESS {
            throw Failure(
                description: "cairo failed writing \(path): \(String(cString: cairo_status_to_string(status)))")
        }
    }

    struct Fonts {
        var regular: OpaquePointer?
        var bold: OpaquePointer?
    }

    /// A page's frame, recorded for painting onto every full page. - Returns: nil if cairo fails.
    static func recordedFrame(fonts: Fonts, document: StationListDocument, rows: Int) -> OpaquePointer? {
        var extents = cairo_rectangle_t(x: 0, y: 0, width: pageWidth, height: pageHeight)
        guard let surface = cairo_recording_surface_create(CAIRO_CONTENT_COLOR_ALPHA, &extents) else { return nil }
        guard let cr = cairo_create(surface), cairo_status(cr) == CAIRO_STATUS_SUCCESS else {
            cairo_surface_destroy(surface)
            return nil
        }
        drawFrame(cr, fonts: fonts, document: document, rows: rows)
        cairo_destroy(cr)
        return surface
    }

    /// The title, the header row, the backgrounds and the grid of a page of `rows` voters.
    static func drawFrame(_ cr: OpaquePointer, fonts: Fonts, document: StationListDocument, rows count: Int) {
        let tableWidth = pageWidth - 2 * margin
        let signatureX = margin + numberWidth + nameWidth
        let top = margin + titleHeight
        let rows = Double(count + 1)  // the header row too

        cairo_set_source_rgb(cr, 0, 0, 0)
        cairo_set_font_face(cr, fonts.bold)
        cairo_set_font_size(cr, 11)
        text(
            cr, "\(document.centerName) (\(document.centerID)) — Station \(document.stationID)", x: margin,
            baseline: margin + 12)
        cairo_set_font_face(cr, fonts.regular)
        cairo_set_font_size(cr, fontSize)

        // Backgrounds: the header row and the number column light blue, every other row light grey.
        cairo_set_source_rgb(cr, 0.68, 0.85, 0.90)
        cairo_rectangle(cr, margin, top, tableWidth, rowHeight)
        cairo_rectangle(cr, margin, top + rowHeight, numberWidth, rowHeight * (rows - 1))
        cairo_fill(cr)
        cairo_set_source_rgb(cr, 0.87, 0.87, 0.87)
        for i in stride(from: 1, to: count, by: 2) {
            cairo_rectangle(
                cr, margin + numberWidth, top + rowHeight * Double(i + 1), tableWidth - numberWidth, rowHeight)
        }
        cairo_fill(cr)

        // The grid, in one stroke.
        cairo_set_source_rgb(cr, 0, 0, 0)
        cairo_set_line_width(cr, 0.5)
        for i in 0...Int(rows) {
            let y = top + rowHeight * Double(i)
            cairo_move_to(cr, margin, y)
            cairo_line_to(cr, margin + tableWidth, y)
        }
        for x in [margin, margin + numberWidth, signatureX, margin + tableWidth] {
            cairo_move_to(cr, x, top)
            cairo_line_to(cr, x, top + rowHeight * rows)
        }
        cairo_stroke(cr)

        centered(cr, "#", x: margin, width: numberWidth, y: top)
        centered(cr, "Voter Name", x: margin + numberWidth, width: nameWidth, y: top)
        centered(cr, "Signature", x: signatureX, width: tableWidth - numberWidth - nameWidth, y: top)
    }

    /// The numbered names of one page, and its footer.
    static func drawRows(
        _ cr: OpaquePointer, fonts: Fonts, document: StationListDocument, page: Int, firstNumber: Int,
        names: ArraySlice<String>
    ) {
        let tableWidth = pageWidth - 2 * margin
        let top = margin + titleHeight
        cairo_set_source_rgb(cr, 0, 0, 0)
        cairo_set_font_face(cr, fonts.regular)
        cairo_set_font_size(cr, fontSize)
        var cells: [(text: String, x: Double, baseline: Double)] = []
        cells.reserveCapacity(2 * names.count)
        var baseline = top + 2 * rowHeight - 3
        for (i, name) in names.enumerated() {
            cells.append((String(firstNumber + i), margin + 3, baseline))
            cells.append((name, margin + numberWidth + 4, baseline))
            baseline += rowHeight
        }
        showAll(cr, cells)
        if let footer = document.footer(page: page) {
            centered(cr, footer, x: margin, width: tableWidth, y: pageHeight - margin - rowHeight)
        }
    }

    /// Shows many texts in one cairo call: each text is shaped into glyphs at its place, and the
    /// glyphs, the UTF-8 and the clusters that map one to the other (so that a reader's copy and
    /// search still find the names) go to `cairo_show_text_glyphs` together. Every call into cairo
    /// is recorded, replayed to analyse the page and replayed again to write it; one call a page
    /// instead of eighty. A text cairo cannot shape is shown on its own, as before.
    static func showAll(_ cr: OpaquePointer, _ cells: [(text: String, x: Double, baseline: Double)]) {
        guard let font = cairo_get_scaled_font(cr) else {
            for cell in cells { text(cr, cell.text, x: cell.x, baseline: cell.baseline) }
            return
        }
        var glyphs: [cairo_glyph_t] = []
        var clusters: [cairo_text_cluster_t] = []
        var utf8: [CChar] = []
        glyphs.reserveCapacity(cells.count * 16)
        clusters.reserveCapacity(cells.count * 16)
        utf8.reserveCapacity(cells.count * 16)
        for cell in cells {
            var shaped: UnsafeMutablePointer<cairo_glyph_t>?
            var glyphCount: Int32 = 0
            var mapped: UnsafeMutablePointer<cairo_text_cluster_t>?
            var clusterCount: Int32 = 0
            var flags = cairo_text_cluster_flags_t(0)
            let bytes = Array(cell.text.utf8CString.dropLast())
            let status = bytes.withUnsafeBufferPointer {
                cairo_scaled_font_text_to_glyphs(
                    font, cell.x, cell.baseline, $0.baseAddress, Int32($0.count), &shaped, &glyphCount, &mapped,
                    &clusterCount, &flags)
            }
            defer {
                cairo_glyph_free(shaped)
                cairo_text_cluster_free(mapped)
            }
            guard status == CAIRO_STATUS_SUCCESS, flags.rawValue == 0 else {
                text(cr, cell.text, x: cell.x, baseline: cell.baseline)
                continue
            }
            glyphs.append(contentsOf: UnsafeBufferPointer(start: shaped, count: Int(glyphCount)))
            clusters.append(contentsOf: UnsafeBufferPointer(start: mapped, count: Int(clusterCount)))
            utf8.append(contentsOf: bytes)
        }
        cairo_show_text_glyphs(
            cr, utf8, Int32(utf8.count), glyphs, Int32(glyphs.count), clusters, Int32(clusters.count),
            cairo_text_cluster_flags_t(0))
    }

    static func text(_ cr: OpaquePointer, _ s: String, x: Double, baseline: Double) {
        cairo_move_to(cr, x, baseline)
        cairo_show_text(cr, s)
    }

    static func centered(_ cr: OpaquePointer, _ s: String, x: Double, width: Double, y: Double) {
        var extents = cairo_text_extents_t()
        cairo_text_extents(cr, s, &extents)
        text(cr, s, x: x + (width - extents.x_advance) / 2, baseline: y + rowHeight - 3)
    }
}
