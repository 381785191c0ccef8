import CImageCodecs
import Foundation

/// A figure of where the CLS token looks, as the DINO and MSN papers draw it: per image a row with the input,
/// the head-averaged map over the input, and each head's map, every map upsampled to the input's size
/// (bilinear over the patch grid) and coloured with an inferno-like scale, min to max per map.
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
        let columns = 2 + (rows.map(\.maps.count).max() ?? 0)
        let (width, height) = (columns * (tileSize + gap) + gap, rows.count * (tileSize + gap) + gap)
        var pixels = [UInt8](repeating: 255, count: width * height * 3)
        for (r, row) in rows.enumerated() {
            let input = row.image.converted(toRGBWith: .drop).resized(width: tileSize, height: tileSize, resample: .nearest)
            let average = (0..<(row.gridHeight * row.gridWidth)).map { i in row.maps.reduce(0) { $0 + $1[i] } / Float(row.maps.count) }
            let tiles = [input, Self.overlay(Self.heat(upsampled(average, row)), on: input)] + row.maps.map { Self.heat(upsampled($0, row)) }
            for (c, tile) in tiles.enumerated() {
                let (x0, y0) = (gap + c * (tileSize + gap), gap + r * (tileSize + gap))
                for y in 0..<tileSize {
                    let source = tile.pixels[(y * tileSize * 3)..<((y + 1) * tileSize * 3)]
                    pixels.replaceSubrange(((y0 + y) * width + x0) * 3..<((y0 + y) * width + x0 + tileSize) * 3, with: source)
                }
            }
        }
        return Image(width: width, height: height, mode: .RGB, pixels: pixels)
    }

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
