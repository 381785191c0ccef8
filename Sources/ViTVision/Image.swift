import CImageCodecs
import Foundation

/// 8-bit interleaved pixels, in one of the modes Pillow opens image files in (palettes already looked up).
public struct Image: Equatable, Sendable {
    public enum Mode: String, Sendable {
        case L, LA, RGB, RGBA, CMYK

        public var channels: Int {
            switch self {
            case .L: 1
            case .LA: 2
            case .RGB: 3
            case .RGBA, .CMYK: 4
            }
        }
    }

    public var width: Int
    public var height: Int
    public var mode: Mode
    /// height × width × channels bytes, row-major.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, mode: Mode, pixels: [UInt8]) {
        precondition(pixels.count == width * height * mode.channels, "\(pixels.count) bytes for \(width)×\(height) \(mode)")
        (self.width, self.height, self.mode, self.pixels) = (width, height, mode, pixels)
    }
}

/// Why an image could not be read; the message names the file.
public struct ImageError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public init(_ path: String, _ reason: String) { (self.path, self.reason) = (path, reason) }
    public var description: String { "\(path): \(reason)" }
}

/// How transparency is removed when an image becomes RGB.
public enum AlphaHandling: String, Sendable {
    /// Drop the alpha channel, as Pillow's `convert("RGB")` (Transformers 4.x).
    case drop
    /// Composite onto white, as Pillow's `alpha_composite` (Transformers 5's `convert_to_rgb`).
    case white
}

public enum ImageDecoder {
    /// Pillow's `Image.MAX_IMAGE_PIXELS`. As in Pillow, larger images get a warning and images of more than
    /// twice as many pixels are refused (before any pixel memory is taken) as likely decompression bombs.
    public static let defaultMaxPixels = 89_478_485

    /// The file name extensions of the formats `decode` reads (folders of images are listed by these).
    public static let fileExtensions: Set<String> = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]

    /// Decodes a JPEG, PNG, WebP, GIF (first frame), BMP or TIFF (first page) file, told apart by content, not
    /// name, as Pillow would open it. The EXIF orientation (JPEG, PNG, WebP, TIFF) is applied as
    /// `ImageOps.exif_transpose` does unless told otherwise.
    public static func decode(
        path: String, applyExifOrientation: Bool = true, maxPixels: Int = defaultMaxPixels, warn: (String) -> Void = { _ in }
    ) throws -> Image {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ImageError(path, FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file")
        }
        return try decode(data: data, path: path, applyExifOrientation: applyExifOrientation, maxPixels: maxPixels, warn: warn)
    }

    public static func decode(
        data: Data, path: String = "<memory>", applyExifOrientation: Bool = true, maxPixels: Int = defaultMaxPixels,
        warn: (String) -> Void = { _ in }
    ) throws -> Image {
        let bytes = [UInt8](data)
        let decoder: (UnsafePointer<UInt8>?, Int, Int64, UnsafeMutablePointer<vitmsn_image>?, UnsafeMutablePointer<CChar>?, Int) -> Int32
        let ascii = { (text: String) in Array(text.utf8) }
        var orientsWhileLoading = false  // Pillow turns a TIFF by its Orientation tag as it loads it (load_end)
        if bytes.starts(with: [0xFF, 0xD8]) {
            decoder = vitmsn_decode_jpeg
        } else if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            decoder = vitmsn_decode_png
        } else if bytes.starts(with: ascii("RIFF")), bytes.dropFirst(8).starts(with: ascii("WEBP")) {
            decoder = vitmsn_decode_webp
        } else if bytes.starts(with: ascii("GIF87a")) || bytes.starts(with: ascii("GIF89a")) {
            decoder = vitmsn_decode_gif
        } else if bytes.starts(with: ascii("BM")) {
            decoder = vitmsn_decode_bmp
        } else if [[0x49, 0x49, 0x2A, 0], [0x4D, 0x4D, 0, 0x2A], [0x49, 0x49, 0x2B, 0], [0x4D, 0x4D, 0, 0x2B]].contains(where: bytes.starts) {
            decoder = vitmsn_decode_tiff  // classic and BigTIFF, either byte order
            orientsWhileLoading = true
        } else {
            throw ImageError(path, "unsupported format (not JPEG, PNG, WebP, GIF, BMP or TIFF)")
        }
        var decoded = vitmsn_image()
        var message = [CChar](repeating: 0, count: 512)
        let refused = maxPixels > Int.max / 2 ? Int64.max : 2 * Int64(max(maxPixels, 0))  // saturates: --max-pixels comes from the user
        let status = decoder(bytes, bytes.count, refused, &decoded, &message, message.count)
        guard status == 0 else { throw ImageError(path, String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)) }
        defer { vitmsn_image_free(&decoded) }
        if Int(decoded.width) * Int(decoded.height) > maxPixels {
            warn("\(path): image of \(decoded.width)×\(decoded.height) pixels exceeds the limit of \(maxPixels) pixels, could be a decompression bomb")
        }
        let mode: Image.Mode = decoded.is_cmyk != 0 ? .CMYK : [1: .L, 2: .LA, 3: .RGB, 4: .RGBA][Int(decoded.channels)]!
        let count = Int(decoded.width) * Int(decoded.height) * mode.channels
        let image = Image(width: Int(decoded.width), height: Int(decoded.height), mode: mode,
                          pixels: Array(UnsafeBufferPointer(start: decoded.pixels, count: count)))
        return applyExifOrientation || orientsWhileLoading ? image.transposed(exifOrientation: Int(decoded.exif_orientation)) : image
    }
}

extension Image {
    /// The image as Pillow's `convert("RGB")` gives it (or with alpha composited on white).
    /// Pillow's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point, `(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`
    /// (other modes go through RGB first; L's alpha is dropped).
    public func convertedToGrayscale() -> Image {
        if mode == .L { return self }
        if mode == .LA { return Image(width: width, height: height, mode: .L, pixels: stride(from: 0, to: pixels.count, by: 2).map { pixels[$0] }) }
        let rgb = converted(toRGBWith: .drop).pixels
        let luma = stride(from: 0, to: rgb.count, by: 3).map { p -> UInt8 in
            let (r, g, b) = (Int(rgb[p]), Int(rgb[p + 1]), Int(rgb[p + 2]))
            let weighted: Int = r * 19595 + g * 38470 + b * 7471
            return UInt8((weighted + 0x8000) >> 16)
        }
        return Image(width: width, height: height, mode: .L, pixels: luma)
    }

    public func converted(toRGBWith alpha: AlphaHandling = .drop) -> Image {
        if mode == .RGB { return self }
        var rgb = [UInt8](repeating: 0, count: width * height * 3)
        let channels = mode.channels
        for i in 0..<(width * height) {
            let p = i * channels
            var (r, g, b): (UInt8, UInt8, UInt8)
            switch mode {
            case .L, .LA: (r, g, b) = (pixels[p], pixels[p], pixels[p])
            case .RGB, .RGBA: (r, g, b) = (pixels[p], pixels[p + 1], pixels[p + 2])
            case .CMYK:
                // Pillow's cmyk2rgb: (255 − k) − c·(255 − k)/255, rounded as its MULDIV255.
                let notK = 255 - Int(pixels[p + 3])
                func ink(_ c: UInt8) -> UInt8 {
                    let t = Int(c) * notK + 128
                    return UInt8(clamping: notK - (((t >> 8) + t) >> 8))
                }
                (r, g, b) = (ink(pixels[p]), ink(pixels[p + 1]), ink(pixels[p + 2]))
            }
            if alpha == .white, mode == .LA || mode == .RGBA {
                let a = Int(pixels[p + channels - 1])
                (r, g, b) = (onWhite(r, a), onWhite(g, a), onWhite(b, a))
            }
            (rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]) = (r, g, b)
        }
        return Image(width: width, height: height, mode: .RGB, pixels: rgb)
    }

    /// Applies EXIF orientation 2–8 the way `ImageOps.exif_transpose` does (1 and 0 leave it as is).
    public func transposed(exifOrientation: Int) -> Image {
        guard (2...8).contains(exifOrientation) else { return self }
        let swaps = exifOrientation >= 5
        let (outWidth, outHeight) = swaps ? (height, width) : (width, height)
        let channels = mode.channels
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<outHeight {
            for x in 0..<outWidth {
                // The source pixel of output (x, y) for each orientation.
                let (sx, sy): (Int, Int) = switch exifOrientation {
                case 2: (width - 1 - x, y)                  // mirror horizontally
                case 3: (width - 1 - x, height - 1 - y)     // rotate 180°
                case 4: (x, height - 1 - y)                 // mirror vertically
                case 5: (y, x)                              // transpose
                case 6: (y, height - 1 - x)                 // rotate 90° clockwise to display
                case 7: (width - 1 - y, height - 1 - x)     // transverse
                default: (width - 1 - y, x)                 // 8: rotate 90° counter-clockwise to display
                }
                let source = (sy * width + sx) * channels
                let target = (y * outWidth + x) * channels
                for c in 0..<channels { out[target + c] = pixels[source + c] }
            }
        }
        return Image(width: outWidth, height: outHeight, mode: mode, pixels: out)
    }
}

/// Pillow's `alpha_composite` of a pixel with alpha `a` over opaque white, in its fixed-point arithmetic.
@inline(__always)
private func onWhite(_ value: UInt8, _ a: Int) -> UInt8 {
    guard a > 0 else { return 255 }
    let precisionBits = 7
    let coef1 = a * 255 * 255 * (1 << precisionBits) / (a * 255 + 255 * (255 - a))
    let coef2 = 255 * (1 << precisionBits) - coef1
    let t = Int(value) * coef1 + 255 * coef2 + (0x80 << precisionBits)
    return UInt8(clamping: ((((t >> 8) + t) >> 8)) >> precisionBits)
}

extension ImageDecoder {
    /// What `transformers.image_utils.load_image` gives for a file: EXIF orientation applied, then RGB.
    public static func loadRGB(
        path: String, applyExifOrientation: Bool = true, alpha: AlphaHandling = .drop, maxPixels: Int = defaultMaxPixels,
        warn: (String) -> Void = { _ in }
    ) throws -> Image {
        try decode(path: path, applyExifOrientation: applyExifOrientation, maxPixels: maxPixels, warn: warn).converted(toRGBWith: alpha)
    }
}
