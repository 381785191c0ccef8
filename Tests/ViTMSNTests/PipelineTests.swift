import Foundation
import XCTest
@testable import ViTMSN

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func image(_ name: String) -> String { root.appendingPathComponent("images/\(name)").path }

    /// A copy of a fixture model with `problem_type` set (nil removes it) and a 16×16 processor.
    static func classifier(_ name: String, problemType: String?) throws -> String {
        let directory = NSTemporaryDirectory() + "vitmsn-pipeline-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model(name) + "/config.json"))) as! [String: Any]
        config["problem_type"] = problemType
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: directory + "/config.json"))
        try FileManager.default.copyItem(atPath: model(name) + "/model.safetensors", toPath: directory + "/model.safetensors")
        try ImageProcessor(height: 16, width: 16).save(modelDirectory: directory)
        return directory
    }
}

final class PipelineTests: XCTestCase {
    let photos = ["baseline_420.jpg", "rgb.png", "gray.jpg"].map(Fixtures.image)

    /// The logits of each photo straight from the model, for checking what the pipeline made of them.
    func logits(_ pipeline: ImageClassificationPipeline) throws -> [[Float]] {
        try photos.map { path in
            let pixels = try pipeline.processor.pixelValues(ImageDecoder.loadRGB(path: path))
            return try pipeline.model.forward(pixelValues: Tensor.stacked([pixels])).logits.scalars
        }
    }

    /// Transformers' default: sigmoid for multi-label models (scores need not sum to 1), softmax otherwise;
    /// top_k is clipped to the label count and the ranking is by score.
    func testScoresFollowTheProblemType() throws {
        for (problemType, function) in [("multi_label_classification", ClassificationFunction.sigmoid), ("single_label_classification", .softmax), (nil, .softmax)] {
            let directory = try Fixtures.classifier("classifier_multi", problemType: problemType)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let classify = try ImageClassificationPipeline(model: directory, parallelism: .serial)
            XCTAssertEqual(ClassificationFunction.default(for: classify.model.config), function)
            let results = classify(photos.map(ImageInput.file), topK: 10, batchSize: 2)
            for (row, result) in zip(try logits(classify), results) {
                let predictions = try result.get()
                XCTAssertEqual(predictions.count, 4, "top_k is clipped to the 4 labels")
                XCTAssertEqual(predictions.map(\.score), predictions.map(\.score).sorted(by: >))
                for prediction in predictions {
                    let index = Int(prediction.label.dropFirst("LABEL_".count))!
                    let expected = function == .sigmoid
                        ? 1 / (1 + exp(-Double(row[index])))
                        : exp(Double(row[index])) / row.map { exp(Double($0)) }.reduce(0, +)
                    XCTAssertEqual(Double(prediction.score), expected, accuracy: 1e-6, "\(problemType ?? "none") \(prediction.label)")
                }
                let total = predictions.map { Double($0.score) }.reduce(0, +)
                if function == .softmax { XCTAssertEqual(total, 1, accuracy: 1e-5) } else { XCTAssertNotEqual(total, 1, accuracy: 1e-3) }
            }
        }
    }

    /// One unreadable input costs only its own slot; bytes and decoded images give what the file gives.
    func testEachInputKeepsItsOwnResult() throws {
        let directory = try Fixtures.classifier("classifier_single", problemType: nil)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let classify = try ImageClassificationPipeline(model: directory)
        let garbage = NSTemporaryDirectory() + "vitmsn-not-an-image-\(UUID().uuidString).jpg"
        try Data([0xFF, 0xD8, 0x00, 0x01]).write(to: URL(fileURLWithPath: garbage))
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: photos[0]))
        let results = classify([.file(photos[0]), .file(garbage), .encoded(bytes, name: "upload"),
                                .decoded(try ImageDecoder.decode(path: photos[0]), name: "pixels"), .file("/no/such/file.png")], topK: 2, batchSize: 2)
        let first = try results[0].get()
        XCTAssertEqual(try results[2].get(), first)
        XCTAssertEqual(try results[3].get(), first)
        guard case .failure(let bad) = results[1], case .failure(let missing) = results[4] else { return XCTFail("bad inputs must fail") }
        XCTAssertEqual(bad.path, garbage)
        XCTAssertEqual(missing.path, "/no/such/file.png")
        XCTAssertTrue(missing.reason.contains("no such file"), missing.reason)
    }

    /// A NaN weight makes NaN outputs: each image then fails with a reason, instead of NaN scores or vectors.
    func testNonFiniteOutputsAreReportedPerImage() throws {
        let directory = try Fixtures.classifier("classifier_single", problemType: nil)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let classify = try ImageClassificationPipeline(model: directory)
        XCTAssertNoThrow(try classify([.file(photos[0])])[0].get())
        classify.model.classifier!.weight.withUnsafeMutableBufferPointer { $0[0] = .nan }
        let embed = ImageFeatureExtractionPipeline(model: classify.model.vit, processor: classify.processor)
        embed.model.layernorm.bias.withUnsafeMutableBufferPointer { $0[0] = .infinity }
        let outputs = classify(photos.map { .file($0) }).map { $0.map { _ in () } } + embed(photos.map { .file($0) }).map { $0.map { _ in () } }
        for result in outputs {
            guard case .failure(let error) = result else { return XCTFail("a NaN output must not pass as a result") }
            XCTAssertTrue(error.reason.contains("NaN or infinite"), error.reason)
        }
    }

    /// A processor that does not resize hands the model images of several sizes: they run one at a time (with
    /// interpolated positions the model accepts any size) instead of failing to stack.
    func testImagesOfSeveralSizesWithoutResizing() throws {
        let directory = try Fixtures.classifier("classifier_single", problemType: nil)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let embed = try ImageFeatureExtractionPipeline(model: directory)
        var processor = embed.processor
        processor.doResize = false
        let unresized = ImageFeatureExtractionPipeline(model: embed.model, processor: processor)
        let small = Image(width: 16, height: 16, mode: .RGB, pixels: [UInt8](repeating: 90, count: 16 * 16 * 3))
        let large = Image(width: 32, height: 16, mode: .RGB, pixels: [UInt8](repeating: 200, count: 32 * 16 * 3))
        let results = unresized([.decoded(small, name: "small"), .decoded(large, name: "large")])
        XCTAssertNoThrow(try results[0].get(), "16×16 is the model's size")
        guard case .failure(let error) = results[1] else { return XCTFail("32×16 without interpolation must fail, alone") }
        XCTAssertEqual(error.path, "large")
    }

    /// A one-channel model takes every photo as gray, as its processor implies (Transformers' processor
    /// would refuse a gray image's 2-D array): JPEG, RGB PNG and gray JPEG alike.
    func testOneChannelModelTakesPhotosAsGray() throws {
        let directory = NSTemporaryDirectory() + "vitmsn-gray-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: Fixtures.model("one_channel"), toPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try ImageProcessor(height: 16, width: 16).save(modelDirectory: directory)
        let embed = try ImageFeatureExtractionPipeline(model: directory)
        XCTAssertEqual(embed.model.config.numChannels, 1)
        let results = embed(photos.map(ImageInput.file))
        for (path, result) in zip(photos, results) {
            let vector = try result.get()
            let gray = try ImageDecoder.decode(path: path).convertedToGrayscale()  // Pillow: convert("L") of the mode it opens
            let pixels = embed.processor.normalized(gray.resized(width: 16, height: 16, resample: embed.processor.resample))
            XCTAssertEqual(pixels.shape, [1, 16, 16])
            let expected = try embed.model.forward(pixelValues: Tensor.stacked([pixels])).lastHiddenState.scalars
            XCTAssertEqual(vector, Array(expected[0..<vector.count]), path)
        }
    }

    /// CLS pooling is token 0 of last_hidden_state; mean pools the patch tokens; normalize gives unit vectors.
    func testFeatureExtractionPools() throws {
        let directory = try Fixtures.classifier("classifier_single", problemType: nil)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let embed = try ImageFeatureExtractionPipeline(model: directory)
        let pixels = try embed.processor.pixelValues(ImageDecoder.loadRGB(path: photos[1]))
        let hidden = try embed.model.forward(pixelValues: Tensor.stacked([pixels])).lastHiddenState
        let (sequence, dim) = (hidden.shape[1], hidden.shape[2])
        let values = hidden.scalars
        let cls = try embed([.file(photos[1])])[0].get()
        XCTAssertEqual(cls, Array(values[0..<dim]))
        let mean = try embed([.file(photos[1])], pooling: .mean)[0].get()
        for d in 0..<dim {
            let expected = (1..<sequence).map { Double(values[$0 * dim + d]) }.reduce(0, +) / Double(sequence - 1)
            XCTAssertEqual(Double(mean[d]), expected, accuracy: 1e-5)
        }
        let unit = try embed([.file(photos[1])], normalize: true)[0].get()
        XCTAssertEqual(Double(unit.reduce(0) { $0 + $1 * $1 }), 1, accuracy: 1e-5)
    }
}
