import Foundation
import ViTCore
import ViTIO
import XCTest
@testable import ViTModel

/// Tests/Fixtures, written by scripts/make_fixtures.py from Transformers (fp32, eager attention).
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")

    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
    static func inputs(_ name: String) -> String { root.appendingPathComponent("cases/\(name).inputs.safetensors").path }
    static func expected(_ name: String) -> String { root.appendingPathComponent("cases/\(name).expected.safetensors").path }

    struct Case: Decodable {
        let name: String
        let model: String
        let output_hidden_states: Bool?
        let output_attentions: Bool?
        let interpolate_pos_encoding: Bool?

        var options: ForwardOptions {
            ForwardOptions(
                outputHiddenStates: output_hidden_states ?? false, outputAttentions: output_attentions ?? false,
                interpolatePosEncoding: interpolate_pos_encoding ?? false)
        }
    }

    struct Manifest: Decodable {
        struct Tolerance: Decodable { let atol: Float }
        let tolerance: Tolerance
        let cases: [Case]
    }

    static func manifest() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: root.appendingPathComponent("cases.json")))
    }

    static func pixels(_ name: String) throws -> Tensor {
        try SafetensorsFile(path: inputs(name)).floatTensor("pixel_values")
    }
}

final class ParityTests: XCTestCase {
    /// Every fixture case: each output Transformers wrote must be produced, with the same shape, within atol.
    func testEveryFixtureCaseMatchesTransformers() throws {
        let manifest = try Fixtures.manifest()
        XCTAssertGreaterThanOrEqual(manifest.cases.count, 20)
        var worst: (error: Float, where: String) = (0, "")
        defer { print("parity: \(manifest.cases.count) cases, worst max |Δ| = \(worst.error) (\(worst.where))") }
        for fixture in manifest.cases {
            let model = try AnyViTMSN.load(directory: Fixtures.model(fixture.model))
            let inputs = try ForwardInputs(file: SafetensorsFile(path: Fixtures.inputs(fixture.name)))
            let outputs = Dictionary(uniqueKeysWithValues: try model.namedOutputs(inputs, options: fixture.options))
            let expected = try SafetensorsFile(path: Fixtures.expected(fixture.name))
            XCTAssertEqual(Set(outputs.keys), Set(expected.tensorNames), "\(fixture.name): output names")
            for name in expected.tensorNames {
                let reference = try expected.floatTensor(name)
                guard let actual = outputs[name] else { continue }
                XCTAssertEqual(actual.shape, reference.shape, "\(fixture.name) \(name): shape")
                let error = actual.maxAbsDifference(reference)
                if !(error <= worst.error) { worst = (error, "\(fixture.name) \(name)") }
                XCTAssertLessThanOrEqual(error, manifest.tolerance.atol, "\(fixture.name) \(name): max |Δ| = \(error)")
            }
        }
    }

    func testHalfPrecisionWeightsAreWidenedOnLoad() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base_bf16"))
        let source = try ModelDirectory.weights(Fixtures.model("base_bf16"))
        XCTAssertEqual(source.info("embeddings.cls_token")?.dtype, .BF16)
        XCTAssertEqual(model.embeddings.clsToken.shape, [1, 1, 32])
    }

    func testFloat32WeightsAreBorrowedFromTheMappedFile() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        XCTAssertFalse(model.encoder.layer[0].intermediate.dense.weight.storage.isOwned)
    }
}

final class ModelErrorTests: XCTestCase {
    func testChannelMismatchUsesTransformersMessage() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("one_channel"))
        XCTAssertThrowsError(try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 16]))) { error in
            XCTAssertEqual("\(error)", "Make sure that the channel dimension of the pixel values match with the one set in the configuration. Expected 1 but got 3.")
        }
    }

    func testImageSizeMismatchUsesTransformersMessage() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        XCTAssertThrowsError(try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 20]))) { error in
            XCTAssertEqual("\(error)", "Input image size (16*20) doesn't match model (16*16).")
        }
        XCTAssertNoThrow(try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 20]), interpolatePosEncoding: true))
    }

    /// An interpolated 2048² input asking for attentions needs ~275 GB: refused from the numbers, before
    /// anything is allocated, while the same input without attentions runs.
    func testInputsBeyondTheMemoryLimitAreRefusedFirst() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))  // patch 4
        let huge = Tensor(zeros: [1, 3, 2048, 2048])
        XCTAssertThrowsError(try model.forward(pixelValues: huge, outputAttentions: true, interpolatePosEncoding: true)) { error in
            XCTAssertTrue("\(error)".contains("262145 tokens) with output_attentions needs") && "\(error)".contains("above the limit"), "\(error)")
        }
        XCTAssertNoThrow(try model.forward(pixelValues: Tensor(zeros: [1, 3, 64, 64]), outputAttentions: true, interpolatePosEncoding: true))
    }

    func testMaskedPositionsNeedAMaskToken() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        XCTAssertNil(model.embeddings.maskToken)
        XCTAssertThrowsError(try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 16]), boolMaskedPos: Tensor(zeros: [1, 16]))) { error in
            XCTAssertTrue("\(error)".contains("mask token"), "\(error)")
        }
        let masked = try ViTMSNModel.load(directory: Fixtures.model("mask_token"))
        XCTAssertThrowsError(try masked.forward(pixelValues: Tensor(zeros: [1, 3, 16, 16]), boolMaskedPos: Tensor(zeros: [1, 15]))) { error in
            XCTAssertTrue("\(error)".contains("[1, 16]"), "\(error)")
        }
    }

    func testHeadMaskShapeIsChecked() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        XCTAssertThrowsError(try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 16]), headMask: Tensor(zeros: [3]))) { error in
            XCTAssertTrue("\(error)".contains("head_mask must have shape [4] or [2, 4]"), "\(error)")
        }
    }

    func testSingleLabelTargetsOutOfRangeAreRejected() throws {
        let model = try ViTMSNForImageClassification.load(directory: Fixtures.model("classifier_single"))
        XCTAssertThrowsError(try model.forward(pixelValues: Tensor(zeros: [2, 3, 16, 16]), labels: .classIndices([1, 5]))) { error in
            XCTAssertEqual("\(error)", "Target 5 is out of bounds.")
        }
    }

    /// Inference infers the problem type for its loss without touching the shared model; training stores it.
    func testProblemTypeIsInferredAndStoredByTraining() throws {
        let model = try ViTMSNForImageClassification.load(directory: Fixtures.model("classifier_multi"))
        XCTAssertNil(model.config.problemType)
        let labels = ClassificationLabels.values(Tensor(zeros: [1, 4]))
        let inference = try model.forward(pixelValues: Tensor(zeros: [1, 3, 16, 16]), labels: labels)
        XCTAssertNil(model.config.problemType)
        var eval: NN.Dropout? = nil
        let (loss, _, _) = try model.forwardTraining(pixelValues: Tensor(zeros: [1, 3, 16, 16]), labels: labels, dropout: &eval)
        XCTAssertEqual(model.config.problemType, .multiLabelClassification)
        XCTAssertEqual(loss, inference.loss, "multi-label BCE either way")
    }
}

final class ThreadingTests: XCTestCase {
    /// Work is split by whole images, by rows and by (batch, head) pairs, never inside a dot product; every
    /// product sums in an order fixed by its shape, so 1, 2, 3 and 7 threads give the same bits (images alone
    /// per thread, then the remainder split: 10 + 1, 9 + 2 and 7 + 4 of 11), in f32 and int8, with and without
    /// returned attentions and hidden states.
    func testThreadCountDoesNotChangeTheBits() throws {
        var generator = SeededGenerator(seed: 3)
        let pixels = Tensor(shape: [11, 3, 16, 16], scalars: (0..<(11 * 768)).map { _ in generator.normal() }) // 187 rows
        for precision in [WeightPrecision.f32, .int8] {
            guard case .model(let model) = try AnyViTMSN.load(directory: Fixtures.model("base"), precision: precision) else {
                return XCTFail("the base fixture is a backbone")
            }
            model.parallelism = .serial
            let reference = try model.forward(pixelValues: pixels, outputAttentions: true, outputHiddenStates: true)
            let blockedReference = try model.forward(pixelValues: pixels)
            for threads in [2, 3, 7] {
                model.parallelism = Parallelism(threads: threads)
                let out = try model.forward(pixelValues: pixels, outputAttentions: true, outputHiddenStates: true)
                let context = "\(precision), \(threads) threads"
                XCTAssertEqual(out.lastHiddenState.scalars, reference.lastHiddenState.scalars, context)
                XCTAssertEqual(try XCTUnwrap(out.attentions).map(\.scalars), try XCTUnwrap(reference.attentions).map(\.scalars), context)
                XCTAssertEqual(try XCTUnwrap(out.hiddenStates).map(\.scalars), try XCTUnwrap(reference.hiddenStates).map(\.scalars), context)
                XCTAssertEqual(try model.forward(pixelValues: pixels).lastHiddenState.scalars, blockedReference.lastHiddenState.scalars, context)
            }
        }
    }
}

final class BlockedAttentionTests: XCTestCase {
    /// Without returned attentions, queries are processed 64 rows at a time; the result must equal the
    /// full S×S computation (used when attentions are returned) at a sequence spanning several blocks.
    func testQueryBlocksGiveTheFullAttentionResult() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        var generator = SeededGenerator(seed: 5)
        let pixels = Tensor(shape: [2, 3, 40, 40], scalars: (0..<(2 * 3 * 1600)).map { _ in generator.normal() }) // S = 101
        let blocked = try model.forward(pixelValues: pixels, interpolatePosEncoding: true)
        let full = try model.forward(pixelValues: pixels, outputAttentions: true, interpolatePosEncoding: true)
        XCTAssertEqual(blocked.lastHiddenState.shape, [2, 101, 32])
        XCTAssertLessThanOrEqual(blocked.lastHiddenState.maxAbsDifference(full.lastHiddenState), 2e-6)
    }
}

final class AttentionMapTests: XCTestCase {
    /// The CLS maps are row 0 of the last layer's attentions without the CLS column, so each sums to one
    /// minus what the CLS token gives itself.
    func testCLSAttentionIsTheLastLayersCLSRow() throws {
        let model = try ViTMSNModel.load(directory: Fixtures.model("base"))
        var generator = SeededGenerator(seed: 4)
        let pixels = Tensor(shape: [2, 3, 16, 16], scalars: (0..<(2 * 768)).map { _ in generator.normal() })
        let maps = try model.clsAttention(pixelValues: pixels)
        let full = try XCTUnwrap(try model.forward(pixelValues: pixels, outputAttentions: true).attentions?.last)
        let (heads, sequence) = (full.shape[1], full.shape[2])
        XCTAssertEqual(maps.shape, [2, heads, sequence - 1])
        for row in 0..<(2 * heads) {
            let map = maps.scalars[(row * (sequence - 1))..<((row + 1) * (sequence - 1))]
            XCTAssertEqual(Array(map), Array(full.scalars[(row * sequence * sequence + 1)..<(row * sequence * sequence + sequence)]))
            XCTAssertEqual(map.reduce(0, +) + full.scalars[row * sequence * sequence], 1, accuracy: 1e-5)
        }
    }
}

final class PackedWeightTests: XCTestCase {
    /// Inference packs a Linear's weight once; an optimiser's in-place write or a new tensor packs it again.
    func testAChangedWeightIsPackedAgain() {
        let layer = NN.Linear(3, 5)
        layer.weight = Tensor(shape: [5, 3], scalars: (0..<15).map(Float.init))
        let x: [Float] = [1, 2, 3]
        func output() -> [Float] {
            var y = [Float](repeating: 0, count: 5)
            layer.forward(x, rows: 1, into: &y)
            return y
        }
        XCTAssertEqual(output(), [8, 26, 44, 62, 80])
        XCTAssertTrue(layer.packedWeight() === layer.packedWeight(), "an unchanged weight keeps its packed copy")
        layer.weight.withUnsafeMutableBufferPointer { $0[0] = 100 }
        XCTAssertEqual(output(), [108, 26, 44, 62, 80])
        layer.weight = Tensor(shape: [5, 3], repeating: 1)
        XCTAssertEqual(output(), [6, 6, 6, 6, 6])
    }
}
