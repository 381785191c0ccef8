import CImageCodecs
import Foundation

/// A figure of where the CLS token looks, as the DINO and MSN papers draw it: per image a row with the input,
/// the head-averaged map over the input, and each head's map, every map upsampled to the input's size
/// (bilinear over the patch grid) and coloured with an inferno-like scale, min to max per map. A header names
/// the columns (INPUT, MEAN ON INPUT: the head average blended over the input, HEAD 1 …) and a colour bar
/// under the rows reads LOW to HIGH.
public struct AttentionFigure {
    public struct Row {
        public var image: Image       // the model's input, L or RGB, at the model's size
        public var maps: [[Float]]    // per head, gridHeight·gridWidth CLS → patch weights
        public var gridHeight: Int, gridWidth: Int

        public init(image: Image, maps: [[Float]], gridHeight: Int, gridWidth: Int) {
            precondition(maps.allSatisfy { $0.count == gridHeight * gridWidth }, "attention maps must cover the \(gridHeight)×\(gridWidth) grid")
            (self.image, self.maps, self.gridHeight, self.gridWidth) = (image, maps, gridHeight, gridWidth)
        }
    }

    public var rows: [Row]
    /// Each tile's side in pixels (inputs are scaled up by an integer factor towards it).
    public var tileSize = 112
    public let gap = 4

    public init(rows: [Row]) { self.rows = rows }

    /// The figure as an RGB image on white.
    public func rendered() -> Image {
        let heads = rows.map(\.maps.count).max() ?? 0
        let columns = 2 + heads
        let scale = tileSize >= 64 ? 2 : 1
        let labelHeight = 5 * scale + gap
        let (width, height) = (columns * (tileSize + gap) + gap, labelHeight + rows.count * (tileSize + gap) + gap + labelHeight + gap)
        var canvas = Canvas(width: width, height: height)
        let names = ["INPUT", "MEAN ON INPUT"] + (0..<heads).map { "HEAD \($0 + 1)" }
        for (c, name) in names.enumerated() {
            canvas.write(name, x: gap + c * (tileSize + gap), y: gap, scale: scale, width: tileSize)
        }
        let top = gap + labelHeight
        for (r, row) in rows.enumerated() {
            let input = row.image.converted(toRGBWith: .drop).resized(width: tileSize, height: tileSize, resample: .nearest)
            let average = (0..<(row.gridHeight * row.gridWidth)).map { i in row.maps.reduce(0) { $0 + $1[i] } / Float(row.maps.count) }
            let tiles = [input, Self.overlay(Self.heat(upsampled(average, row)), on: input)] + row.maps.map { Self.heat(upsampled($0, row)) }
            for (c, tile) in tiles.enumerated() {
                canvas.draw(tile, x: gap + c * (tileSize + gap), y: top + r * (tileSize + gap))
            }
        }
        // The colour scale: LOW, a bar one tile wide, HIGH.
        let barY = top + rows.count * (tileSize + gap)
        let low = canvas.write("LOW", x: gap, y: barY, scale: scale, width: tileSize)
        let bar = Self.heat((0..<(tileSize * tileSize)).map { Float($0 % tileSize) })
        canvas.draw(bar, x: low + gap, y: barY, rows: 5 * scale)
        canvas.write("HIGH", x: low + 2 * gap + tileSize, y: barY, scale: scale, width: tileSize)
        return Image(width: width, height: height, mode: .RGB, pixels: canvas.pixels)
    }

    /// An RGB canvas on white that tiles and text are drawn into, clipped to its edges.
    struct Canvas {
        let width: Int, height: Int
        var pixels: [UInt8]

        init(width: Int, height: Int) {
            (self.width, self.height) = (width, height)
            pixels = [UInt8](repeating: 255, count: width * height * 3)
        }

        /// Copies the first `rows` rows of an RGB tile with its top left at (x, y).
        mutating func draw(_ tile: Image, x: Int, y: Int, rows: Int? = nil) {
            for row in 0..<min(rows ?? tile.height, tile.height, height - y) {
                let count = min(tile.width, width - x) * 3
                let source = tile.pixels[(row * tile.width * 3)..<(row * tile.width * 3 + count)]
                pixels.replaceSubrange(((y + row) * width + x) * 3..<((y + row) * width + x) * 3 + count, with: source)
            }
        }

        /// Dark gray text in the 3×5 font, each dot `scale` pixels, cut at `width` pixels; returns where it ended.
        @discardableResult
        mutating func write(_ text: String, x: Int, y: Int, scale: Int, width limit: Int) -> Int {
            var pen = x
            for character in text {
                let glyph = font[character] ?? []
                for (row, line) in glyph.enumerated() {
                    for (column, dot) in line.enumerated() where dot == "#" {
                        for dy in 0..<scale {
                            for dx in 0..<scale {
                                let (px, py) = (pen + column * scale + dx, y + row * scale + dy)
                                guard px < min(x + limit, width), py < height else { continue }
                                pixels.replaceSubrange((py * width + px) * 3..<(py * width + px) * 3 + 3, with: [40, 40, 40])
                            }
                        }
                    }
                }
                pen += 4 * scale
            }
            return min(pen, x + limit)
        }
    }

    /// A 3×5 dot font of the legend's letters and the digits.
    static let font: [Character: [String]] = [
        "A": [".#.", "#.#", "###", "#.#", "#.#"], "D": ["##.", "#.#", "#.#", "#.#", "##."], "E": ["###", "#..", "##.", "#..", "###"],
        "G": [".##", "#..", "#.#", "#.#", ".##"], "H": ["#.#", "#.#", "###", "#.#", "#.#"], "I": ["###", ".#.", ".#.", ".#.", "###"],
        "L": ["#..", "#..", "#..", "#..", "###"], "M": ["#.#", "###", "###", "#.#", "#.#"], "N": ["##.", "#.#", "#.#", "#.#", "#.#"],
        "O": [".#.", "#.#", "#.#", "#.#", ".#."], "P": ["##.", "#.#", "##.", "#..", "#.."], "T": ["###", ".#.", ".#.", ".#.", ".#."],
        "U": ["#.#", "#.#", "#.#", "#.#", "###"], "W": ["#.#", "#.#", "###", "###", "#.#"],
        "0": ["###", "#.#", "#.#", "#.#", "###"], "1": [".#.", "##.", ".#.", ".#.", "###"], "2": ["##.", "..#", ".#.", "#..", "###"],
        "3": ["##.", "..#", ".#.", "..#", "##."], "4": ["#.#", "#.#", "###", "..#", "..#"], "5": ["###", "#..", "##.", "..#", "##."],
        "6": [".##", "#..", "###", "#.#", "###"], "7": ["###", "..#", ".#.", ".#.", ".#."], "8": ["###", "#.#", "###", "#.#", "###"],
        "9": ["###", "#.#", "###", "..#", "##."],
    ]

    /// A grid map bilinearly upsampled to the tile (pixel centres aligned, as `align_corners=False`).
    func upsampled(_ map: [Float], _ row: Row) -> [Float] {
        let (gh, gw) = (row.gridHeight, row.gridWidth)
        func axis(_ i: Int, _ cells: Int) -> (Int, Int, Float) {
            let position = min(max((Float(i) + 0.5) * Float(cells) / Float(tileSize) - 0.5, 0), Float(cells - 1))
            let low = Int(position)
            return (low, min(low + 1, cells - 1), position - Float(low))
        }
        var out = [Float](repeating: 0, count: tileSize * tileSize)
        for y in 0..<tileSize {
            let (y0, y1, fy) = axis(y, gh)
            for x in 0..<tileSize {
                let (x0, x1, fx) = axis(x, gw)
                let top = map[y0 * gw + x0] * (1 - fx) + map[y0 * gw + x1] * fx
                let bottom = map[y1 * gw + x0] * (1 - fx) + map[y1 * gw + x1] * fx
                out[y * tileSize + x] = top * (1 - fy) + bottom * fy
            }
        }
        return out
    }

    /// Values scaled min→max onto black–purple–orange–pale yellow.
    static func heat(_ values: [Float]) -> Image {
        let stops: [(Float, Float, Float)] = [(0, 0, 4), (120, 28, 109), (237, 105, 37), (252, 255, 164)]
        let (low, high) = (values.min() ?? 0, values.max() ?? 1)
        let side = Int(Double(values.count).squareRoot())
        let pixels = values.flatMap { v -> [UInt8] in
            let t = high > low ? (v - low) / (high - low) * Float(stops.count - 1) : 0
            let i = min(Int(t), stops.count - 2)
            let f = t - Float(i)
            let (a, b) = (stops[i], stops[i + 1])
            return [a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f].map { UInt8(max(0, min(255, $0.rounded()))) }
        }
        return Image(width: side, height: side, mode: .RGB, pixels: pixels)
    }

    /// The heat map over a dimmed input, half and half.
    static func overlay(_ heat: Image, on input: Image) -> Image {
        var pixels = heat.pixels
        for i in pixels.indices {
            let blend: Int = (Int(heat.pixels[i]) + Int(input.pixels[i]) / 2) * 2 / 3
            pixels[i] = UInt8(blend)
        }
        return Image(width: heat.width, height: heat.height, mode: .RGB, pixels: pixels)
    }
}

extension Image {
    /// Writes the image as an 8-bit PNG, through a temporary file renamed into place.
    public func writePNG(to path: String) throws {
        let image = mode == .CMYK ? converted(toRGBWith: .drop) : self
        let temporary = path + ".partial"
        var message = [CChar](repeating: 0, count: 256)
        let status = vitmsn_encode_png(image.pixels, Int32(width), Int32(height), Int32(image.mode.channels), temporary, &message, message.count)
        guard status == 0 else {
            try? FileManager.default.removeItem(atPath: temporary)
            throw ImageError(path, String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        guard rename(temporary, path) == 0 else { throw ImageError(path, "cannot rename \(temporary) into place") }
    }
}
