import Foundation
import ViTCore
import ViTIO
import XCTest
@testable import ViTVision

/// Tests/Fixtures/images, written by scripts/make_image_fixtures.py from Pillow and ViTImageProcessor.
enum ImageFixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/images")

    struct Entry: Decodable {
        let file: String
        let pillow_mode: String
        let decoded: String
        let decoded_shape: [Int]
        let rgb: String
        let rgb_size: [Int]
        let resized: [String: String]
        let pixel_values: [String: String]
        let rgb_on_white: String?
    }

    struct Manifest: Decodable {
        let sizes: [[Int]]
        let small: [Int]
        let images: [Entry]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: root.appendingPathComponent("manifest.json")))
    }

    static func path(_ file: String) -> String { root.appendingPathComponent(file).path }

    /// The processor the fixtures were made with (vit-msn checkpoints' mean and std).
    static func processor(height: Int, width: Int) -> ImageProcessor {
        var processor = ImageProcessor()
        (processor.height, processor.width) = (height, width)
        processor.imageMean = [0.485, 0.456, 0.406]
        processor.imageStd = [0.229, 0.224, 0.225]
        return processor
    }
}

/// 64-bit FNV-1a, the digest the fixture script pins large arrays with.
func fnv1a<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return String(format: "%016llx", hash)
}

func fnv1a(_ tensor: Tensor) -> String {
    tensor.withUnsafeBufferPointer { fnv1a(UnsafeRawBufferPointer($0)) }
}

final class ImageParityTests: XCTestCase {
    func testDecodedPixelsEqualPillows() throws {
        for entry in try ImageFixtures.manifest().images {
            let image = try ImageDecoder.decode(path: ImageFixtures.path(entry.file), applyExifOrientation: false)
            // Pillow's P and 1 modes are compared after convert("RGB"); this decoder expands them on reading.
            let comparable = ["P", "1"].contains(entry.pillow_mode) ? image.converted(toRGBWith: .drop) : image
            let shape = [comparable.height, comparable.width] + (comparable.mode == .L ? [] : [comparable.mode.channels])
            XCTAssertEqual(shape, entry.decoded_shape, entry.file)
            XCTAssertEqual(fnv1a(comparable.pixels), entry.decoded, "\(entry.file): decoded pixels differ from Pillow's")
        }
    }

    func testLoadImageGivesPillowsRGB() throws {
        for entry in try ImageFixtures.manifest().images {
            let rgb = try ImageDecoder.loadRGB(path: ImageFixtures.path(entry.file))
            XCTAssertEqual([rgb.height, rgb.width], entry.rgb_size, entry.file)
            XCTAssertEqual(fnv1a(rgb.pixels), entry.rgb, "\(entry.file): exif_transpose + convert(\"RGB\") differs")
        }
    }

    /// The orientation tag written in every TIFF type, count and byte order (exif_types.json): applied exactly
    /// where Pillow's exif_transpose applies it.
    func testExifOrientationOfEveryTypeIsReadAsPillowReadsIt() throws {
        struct Case: Decodable { let name, jpeg, rgb: String; let rgb_size: [Int] }
        struct Cases: Decodable { let cases: [Case] }
        let cases = try JSONDecoder().decode(Cases.self, from: Data(contentsOf: ImageFixtures.root.appendingPathComponent("exif_types.json"))).cases
        XCTAssertGreaterThan(cases.count, 20)
        for entry in cases {
            let rgb = try ImageDecoder.decode(data: try XCTUnwrap(Data(base64Encoded: entry.jpeg)), path: entry.name).converted(toRGBWith: .drop)
            XCTAssertEqual([rgb.height, rgb.width], entry.rgb_size, entry.name)
            XCTAssertEqual(fnv1a(rgb.pixels), entry.rgb, entry.name)
        }
    }

    func testAlphaCompositedOnWhiteEqualsPillow() throws {
        let withAlpha = try ImageFixtures.manifest().images.filter { $0.rgb_on_white != nil }
        XCTAssertEqual(withAlpha.map(\.file), [
            "gray_alpha.png", "gray_alpha.tiff", "lossless_alpha.webp", "lossy_alpha.webp", "rgba.png", "rgba.tiff",
            "rgba_associated.tiff", "rgba_translucent.png", "v5_bgra.bmp",
        ])
        for entry in withAlpha {
            let rgb = try ImageDecoder.loadRGB(path: ImageFixtures.path(entry.file), alpha: .white)
            XCTAssertEqual(fnv1a(rgb.pixels), entry.rgb_on_white, entry.file)
        }
    }

    func testResizeEqualsPillowInEveryPixel() throws {
        let manifest = try ImageFixtures.manifest()
        let small = try SafetensorsFile(path: ImageFixtures.path("images.safetensors"))
        for entry in manifest.images {
            let rgb = try ImageDecoder.loadRGB(path: ImageFixtures.path(entry.file))
            for size in manifest.sizes {
                for (filter, resample) in [("nearest", Resampling.nearest), ("bilinear", .bilinear), ("bicubic", .bicubic)] {
                    let resized = rgb.resized(width: size[1], height: size[0], resample: resample)
                    let key = "\(size[0])x\(size[1])-\(filter)"
                    if size == manifest.small, small.tensorNames.contains("\(entry.file)/resized.\(filter)") {
                        let reference = try small.integerValues("\(entry.file)/resized.\(filter)")
                        let differing = zip(resized.pixels, reference).filter { Int64($0) != $1 }.count
                        XCTAssertEqual(differing, 0, "\(entry.file) \(key): \(differing) bytes differ from Pillow")
                    }
                    XCTAssertEqual(fnv1a(resized.pixels), entry.resized[key], "\(entry.file) \(key)")
                }
            }
        }
    }

    func testPixelValuesMatchViTImageProcessor() throws {
        let manifest = try ImageFixtures.manifest()
        let small = try SafetensorsFile(path: ImageFixtures.path("images.safetensors"))
        for entry in manifest.images {
            let rgb = try ImageDecoder.loadRGB(path: ImageFixtures.path(entry.file))
            for size in manifest.sizes {
                let values = try ImageFixtures.processor(height: size[0], width: size[1]).pixelValues(rgb)
                XCTAssertEqual(values.shape, [3, size[0], size[1]])
                if size == manifest.small, small.tensorNames.contains("\(entry.file)/pixel_values") {
                    let reference = try small.floatTensor("\(entry.file)/pixel_values")
                    XCTAssertLessThanOrEqual(values.maxAbsDifference(reference), 1e-6, entry.file)
                }
                XCTAssertEqual(fnv1a(values), entry.pixel_values["\(size[0])x\(size[1])"], "\(entry.file) \(size): bit-identical pixel_values")
            }
        }
    }
}
