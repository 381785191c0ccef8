import Foundation
import XCTest
@testable import ViTVision

private func temporaryFile(_ name: String, _ bytes: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-img-\(UUID().uuidString)-\(name)").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

/// A little-endian, one-strip, 2×2 grey TIFF with the given sample layout and `dataBytes` of pixel data.
private func minimalTIFF(bitsPerSample: UInt32, sampleFormat: UInt32, dataBytes: UInt32 = 16) -> [UInt8] {
    let entries: [(tag: UInt32, type: UInt32, value: UInt32)] = [
        (256, 3, 2), (257, 3, 2), (258, 3, bitsPerSample), (259, 3, 1), (262, 3, 1), (273, 4, 134), (277, 3, 1),
        (278, 3, 2), (279, 4, bitsPerSample / 2), (339, 3, sampleFormat),
    ]
    var bytes: [UInt8] = [0x49, 0x49, 42, 0, 8, 0, 0, 0]
    func append(_ value: UInt32, bytes count: Int) { for i in 0..<count { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
    append(UInt32(entries.count), bytes: 2)
    for entry in entries {
        append(entry.tag, bytes: 2)
        append(entry.type, bytes: 2)
        append(1, bytes: 4)
        append(entry.value, bytes: 4)
    }
    append(0, bytes: 4)
    return bytes + [UInt8](repeating: 7, count: Int(dataBytes))
}

private func fixtureBytes(_ file: String) throws -> [UInt8] {
    try [UInt8](Data(contentsOf: URL(fileURLWithPath: ImageFixtures.path(file))))
}

final class ImageErrorTests: XCTestCase {
    func testUnreadableFilesNameThePathAndReason() throws {
        let jpeg = try fixtureBytes("baseline_444.jpg"), png = try fixtureBytes("rgb.png")
        var badCRC = png
        badCRC[29] ^= 0xFF // inside IHDR, whose CRC then fails
        let cases: [(String, String)] = [
            (try temporaryFile("truncated.jpg", Array(jpeg.prefix(jpeg.count / 2))), "truncated"),
            (try temporaryFile("truncated.png", Array(png.prefix(png.count / 2))), "truncated"),
            (try temporaryFile("header-only.jpg", Array(jpeg.prefix(20))), "truncated"),
            (try temporaryFile("crc.png", badCRC), "CRC"),
            (try temporaryFile("text.png", Array("not an image".utf8)), "unsupported format"),
            (try temporaryFile("empty.jpg", []), "unsupported format"),
            ("/nonexistent/photo.jpg", "no such file"),
        ]
        for (path, reason) in cases {
            XCTAssertThrowsError(try ImageDecoder.decode(path: path), path) { error in
                let message = "\(error)"
                XCTAssertTrue(message.hasPrefix(path), message)
                XCTAssertTrue(message.contains(reason), "expected '\(reason)' in \(message)")
            }
        }
    }

    /// Inputs the fuzzer found (fuzz-findings/): each is refused with an error now.
    func testFuzzerFindingsAreRefused() throws {
        let folder = ImageFixtures.path("fuzz-findings")
        let findings = try FileManager.default.contentsOfDirectory(atPath: folder)
        XCTAssertFalse(findings.isEmpty)
        for name in findings {
            XCTAssertThrowsError(try ImageDecoder.decode(path: folder + "/" + name), name) { XCTAssertTrue($0 is ImageError, "\($0)") }
        }
    }

    /// Every format checks the pixel limit on its header, before any pixel memory is taken.
    func testEveryFormatRefusesImagesAboveThePixelLimit() throws {
        for file in ["lossy.webp", "animated.webp", "interlaced.gif", "frame_outside_screen.gif", "rgb24.bmp", "rle4.bmp", "rgb.tiff", "tiled.tiff"] {
            let image = try ImageDecoder.decode(path: ImageFixtures.path(file))
            let limit = image.width * image.height / 2 - 1  // refused above twice the limit
            XCTAssertThrowsError(try ImageDecoder.decode(path: ImageFixtures.path(file), maxPixels: limit), file) { error in
                XCTAssertTrue("\(error)".contains("exceeds the limit of \(2 * limit) pixels"), "\(error)")
            }
        }
    }

    /// Layouts Pillow reads differently from what their palettes say, or not at all, are refused by name.
    func testUnsupportedLayoutsAreNamed() throws {
        var bmp = try fixtureBytes("palette4.bmp")
        bmp[28] = 2  // 2-bit pixels: no such BMP depth
        let cases: [(String, [UInt8], String)] = [
            ("depth2.bmp", bmp, "unsupported BMP pixel depth (2)"),
            ("float.tiff", minimalTIFF(bitsPerSample: 32, sampleFormat: 3), "unsupported TIFF: sample format 3"),
            ("uint8.tiff", minimalTIFF(bitsPerSample: 8, sampleFormat: 1, dataBytes: 3), "invalid TIFF"),
            ("gif.gif", Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0, 0x3B], "GIF file holds no image"),
        ]
        for (name, bytes, reason) in cases {
            XCTAssertThrowsError(try ImageDecoder.decode(data: Data(bytes), path: name), name) { error in
                XCTAssertTrue("\(error)".contains(reason), "expected '\(reason)' in \(error)")
            }
        }
    }

    /// As Pillow: a warning above the limit, a refusal (before decoding) above twice the limit.
    func testThePixelLimitWarnsThenRefuses() throws {
        for file in ["baseline_444.jpg", "rgb.png"] { // 160×120 = 19,200 pixels
            let path = ImageFixtures.path(file)
            XCTAssertThrowsError(try ImageDecoder.decode(path: path, maxPixels: 9_599)) { error in
                XCTAssertTrue("\(error)".contains("exceeds the limit of 19198 pixels"), "\(error)")
            }
            var warnings: [String] = []
            XCTAssertNoThrow(try ImageDecoder.decode(path: path, maxPixels: 9_600) { warnings.append($0) })
            XCTAssertEqual(warnings.count, 1)
            XCTAssertTrue(warnings.first?.contains("decompression bomb") ?? false)
            warnings = []
            XCTAssertNoThrow(try ImageDecoder.decode(path: path, maxPixels: 19_200) { warnings.append($0) })
            XCTAssertEqual(warnings, [])
            XCTAssertEqual(try ImageDecoder.decode(path: path, maxPixels: .max).width, 160, "twice Int.max saturates")
        }
        XCTAssertEqual(ImageDecoder.defaultMaxPixels, 89_478_485, "Pillow's MAX_IMAGE_PIXELS")
    }

    func testExifOrientationCanBeIgnored() throws {
        let path = ImageFixtures.path("exif_orientation_6.jpg")
        let applied = try ImageDecoder.decode(path: path)
        let raw = try ImageDecoder.decode(path: path, applyExifOrientation: false)
        XCTAssertEqual([raw.width, raw.height], [120, 80])
        XCTAssertEqual([applied.width, applied.height], [80, 120])
        XCTAssertEqual(raw.transposed(exifOrientation: 6), applied)
    }

    /// Truncations and byte flips of real files, thousands of times: every decode returns an image or
    /// throws ImageError; none crashes or reads outside the file (run under ASan to see the latter).
    func testMutatedFilesDecodeOrThrow() throws {
        var generator = SystemRandomNumberGenerator()
        var (decoded, rejected) = (0, 0)
        let files = [
            "baseline_420.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg", "rgb.png", "palette_4bit.png", "gray_alpha.png", "rgb16.png",
            "lossy.webp", "lossless_alpha.webp", "interlaced.gif", "offset_frame.gif", "rle8.bmp", "rle4.bmp", "v5_bgra.bmp",
            "rgb_lzw.tiff", "rgb_jpeg.tiff", "tiled.tiff",
        ]
        for file in files {
            let original = try fixtureBytes(file)
            for trial in 0..<400 {
                var bytes = original
                if trial % 4 == 0 {
                    bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
                } else {
                    for _ in 0..<Int.random(in: 1...8, using: &generator) {
                        let limit = Bool.random(using: &generator) ? min(bytes.count, 400) : bytes.count
                        bytes[Int.random(in: 0..<limit, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
                    }
                }
                do {
                    let image = try ImageDecoder.decode(data: Data(bytes), path: file)
                    XCTAssertEqual(image.pixels.count, image.width * image.height * image.mode.channels)
                    decoded += 1
                } catch is ImageError {
                    rejected += 1
                }
            }
        }
        XCTAssertEqual(decoded + rejected, 400 * files.count)
        XCTAssertGreaterThan(rejected, 100 * files.count)
    }
}

final class ImageProcessorConfigTests: XCTestCase {
    func testLegacyAndCurrentConfigForms() throws {
        let legacy = try ImageProcessor.load(modelDirectory: ImageFixtures.root.deletingLastPathComponent().appendingPathComponent("models/base").path)
        XCTAssertEqual([legacy.height, legacy.width], [16, 16])
        XCTAssertEqual(legacy.imageMean, [0.485, 0.456, 0.406])
        XCTAssertEqual(legacy.resample, .bilinear)
        XCTAssertEqual(legacy.rescaleFactor, 1.0 / 255.0, "absent in the legacy form: the default")
        let current = try ImageProcessor(json: Data(#"{"size": {"height": 32, "width": 48}, "resample": 3, "do_convert_rgb": true, "rescale_factor": 0.5}"#.utf8))
        XCTAssertEqual([current.height, current.width], [32, 48])
        XCTAssertEqual(current.resample, .bicubic)
        XCTAssertEqual(current.doConvertRGB, true)
        XCTAssertEqual(current.rescaleFactor, 0.5)
    }

    /// What `save` writes, `load` reads back field for field, in the current form Transformers writes.
    func testSavedProcessorRoundTrips() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("processor-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var processor = ImageProcessor(height: 20, width: 36)
        (processor.resample, processor.doConvertRGB, processor.imageMean, processor.rescaleFactor) = (.bicubic, true, [0.1, 0.2, 0.3], 0.25)
        try processor.save(modelDirectory: directory)
        let loaded = try ImageProcessor.load(modelDirectory: directory)
        XCTAssertEqual([loaded.height, loaded.width, loaded.resample.rawValue], [20, 36, Resampling.bicubic.rawValue])
        XCTAssertEqual(loaded.doConvertRGB, true)
        XCTAssertEqual(loaded.imageMean, [0.1, 0.2, 0.3])
        XCTAssertEqual(loaded.rescaleFactor, 0.25)
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/preprocessor_config.json"))) as? [String: Any]
        XCTAssertEqual(written?["image_processor_type"] as? String, "ViTImageProcessor")
        XCTAssertEqual(written?["size"] as? [String: Int], ["height": 20, "width": 36])
    }

    func testBadConfigsAreRejected() {
        let cases: [(String, String)] = [
            (#"{"size": {"shortest_edge": 224}}"#, "field 'size': The `size` dictionary must contain the keys `height` and `width`"),
            (#"{"resample": 9}"#, "Pillow's filters are 0–5"),
            (#"{"image_mean": "red"}"#, "'image_mean' has the wrong type"),
            (#"{"image_std": [0.2, 0, 0.2]}"#, "std non-zero"),
            (#"{"size": 0}"#, "size must be positive"),
            (#"{"size": 1000000}"#, "1000000×1000000 is above the 178956970-pixel limit"),
            (#"{"size": {"height": 4611686018427387904, "width": 4}}"#, "pixel limit"),
            // As strict as every config reader: 1 is not true, 3.7 is not an integer, true is not a number.
            (#"{"do_resize": 1}"#, "'do_resize' has the wrong type"),
            (#"{"resample": 3.7}"#, "'resample': 3.7 is not an integer"),
            (#"{"do_normalize": true, "rescale_factor": true}"#, "'rescale_factor' has the wrong type"),
            (#"{"size": {"height": 224.5, "width": 224}}"#, "must contain the keys `height` and `width`"),
            (#"[1, 2]"#, "preprocessor_config.json: not a JSON object"),
            (#"{"size": "#, "preprocessor_config.json: not valid JSON"),
        ]
        for (json, reason) in cases {
            XCTAssertThrowsError(try ImageProcessor(json: Data(json.utf8))) { XCTAssertTrue("\($0)".contains(reason), "\($0)") }
        }
        XCTAssertThrowsError(try ImageProcessor.load(modelDirectory: "/nonexistent")) {
            XCTAssertTrue("\($0)".contains("no preprocessor_config.json"), "\($0)")
        }
    }

    func testNonRGBImagesFailAsInTransformersUnlessConverted() throws {
        let gray = try ImageDecoder.decode(path: ImageFixtures.path("gray.png"))
        var processor = ImageProcessor()
        XCTAssertThrowsError(try processor.pixelValues(gray)) {
            XCTAssertTrue("\($0)".contains("Unsupported number of image dimensions: 2"), "\($0)")
        }
        let rgba = try ImageDecoder.decode(path: ImageFixtures.path("rgba.png"))
        XCTAssertThrowsError(try processor.pixelValues(rgba)) { XCTAssertTrue("\($0)".contains("Unable to infer channel dimension format")) }
        processor.doConvertRGB = true
        XCTAssertEqual(try processor.pixelValues(gray).shape, [3, 224, 224])
        XCTAssertEqual(try processor.pixelValues([gray, rgba]).shape, [2, 3, 224, 224])
    }
}
