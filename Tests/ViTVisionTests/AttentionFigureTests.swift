import Foundation
import XCTest
@testable import ViTVision

final class AttentionFigureTests: XCTestCase {
    /// The figure has a tile per input, average and head under a header of column names, and a colour bar
    /// below; a map peaking in one patch is brightest there; the PNG written decodes to the same pixels.
    func testFigureLayoutPeakAndPNGRoundTrip() throws {
        let input = Image(width: 8, height: 8, mode: .L, pixels: (0..<64).map { UInt8($0 * 4) })
        var peak = [Float](repeating: 0, count: 16)
        peak[4 * 3 + 3] = 1 // bottom-right patch of a 4×4 grid
        var figure = AttentionFigure(rows: [AttentionFigure.Row(image: input, maps: [peak, peak.reversed()], gridHeight: 4, gridWidth: 4)])
        figure.tileSize = 32
        let image = figure.rendered()
        XCTAssertEqual(image.width, 4 * (32 + 4) + 4)
        let label = 5 + 4 // one-pixel glyphs at this tile size, and a gap
        XCTAssertEqual(image.height, label + 32 + 8 + label + 4)
        func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(image.pixels[((y * image.width + x) * 3)..<((y * image.width + x) * 3 + 3)]) }
        XCTAssertEqual(pixel(4, 4), [40, 40, 40]) // the I of INPUT, top left
        XCTAssertEqual(pixel(4 + 36, 4), [40, 40, 40]) // the M of MEAN
        XCTAssertEqual(pixel(4 + 36 + 1, 4), [255, 255, 255])
        let barY = 4 + label + 32 + 4
        let barX = 4 + 3 * 4 + 4 // after LOW
        XCTAssertLessThan(pixel(barX, barY + 2).map(Int.init).reduce(0, +), pixel(barX + 31, barY + 2).map(Int.init).reduce(0, +)) // dark to bright
        func brightness(tile: Int, x: Int, y: Int) -> Int {
            let offset = ((4 + label + y) * image.width + 4 + tile * 36 + x) * 3
            return image.pixels[offset..<(offset + 3)].reduce(0) { $0 + Int($1) }
        }
        XCTAssertGreaterThan(brightness(tile: 2, x: 28, y: 28), brightness(tile: 2, x: 3, y: 3)) // first head: bottom right
        XCTAssertGreaterThan(brightness(tile: 3, x: 3, y: 3), brightness(tile: 3, x: 28, y: 28)) // second head: top left

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-figure-\(UUID()).png").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try image.writePNG(to: path)
        XCTAssertEqual(try ImageDecoder.decode(path: path), image)
        XCTAssertThrowsError(try image.writePNG(to: "/nonexistent-dir/figure.png")) { XCTAssertTrue("\($0)".contains("figure.png"), "\($0)") }
    }
}
