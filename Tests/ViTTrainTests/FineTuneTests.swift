import Foundation
import ViTCore
import ViTModel
import XCTest
@testable import ViTTrain

/// A run directory with a two-class image folder cut from the fixture photos (JPEG class vs PNG class), and
/// a copy of the tiny training fixture classifier.
final class FineTuneWorkspace {
    let root: String
    var trainDir: String { root + "/train" }
    var outputDir: String { root + "/run" }
    static let model = TrainingFixtures.root.appendingPathComponent("classifier").path

    init(extraFiles: [String: Data] = [:], emptyClass: Bool = false) throws {
        root = NSTemporaryDirectory() + "/vitmsn-finetune-\(UUID().uuidString)"
        let manager = FileManager.default
        let images = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("images").path
        for file in try manager.contentsOfDirectory(atPath: images) where file.hasSuffix(".jpg") || file.hasSuffix(".png") {
            let folder = trainDir + "/" + (file.hasSuffix(".jpg") ? "jpeg" : "png")
            try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try manager.copyItem(atPath: images + "/" + file, toPath: folder + "/" + file)
        }
        for (path, data) in extraFiles { try data.write(to: URL(fileURLWithPath: trainDir + "/" + path)) }
        if emptyClass { try manager.createDirectory(atPath: trainDir + "/empty", withIntermediateDirectories: true) }
    }

    func arguments(epochs: Int = 2) -> FineTuneArguments {
        var a = FineTuneArguments(model: Self.model, outputDir: outputDir)
        a.trainDir = trainDir
        (a.epochs, a.batchSize, a.learningRate, a.validationSplit, a.ignoreMismatchedSizes) = (epochs, 4, 1e-2, 0.25, true)
        (a.warmupRatio, a.lrScheduler, a.weightDecay, a.seed) = (0.2, .cosine, 0.01, 7)
        return a
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }
}

extension String {
    /// This log with the images/s column (timing, which differs run to run) taken from `other`.
    func replacingImagesPerSecond(with other: String) -> String {
        zip(split(separator: "\n"), other.split(separator: "\n")).map { mine, theirs in
            (mine.split(separator: ",").dropLast() + [theirs.split(separator: ",").last!]).joined(separator: ",")
        }.joined(separator: "\n") + "\n"
    }
}

final class FineTuneTests: XCTestCase {
    private func weights(_ model: NN.Module) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.name, $0.tensor.scalars) })
    }

    private func train(_ arguments: FineTuneArguments, resume: Bool = false, events: (FineTuneEvent) -> Void = { _ in }) throws -> FineTuner {
        let tuner = try FineTuner(arguments, resume: resume, events: events)
        tuner.model.vit.parallelism = .serial
        try tuner.run(events: events)
        return tuner
    }

    /// Three epochs in one go, and the same run stopped after epoch 1 or mid-epoch 2 then resumed, end with
    /// bit-identical weights.
    func testResumedRunEndsWithTheSameWeights() throws {
        let straight = try FineTuneWorkspace()
        var losses: [Float] = []
        let reference = try train(straight.arguments(epochs: 3)) { if case .step(_, _, _, let r, _) = $0 { losses.append(r.loss) } }
        XCTAssertEqual(losses.count, 12)
        XCTAssertTrue(losses.allSatisfy(\.isFinite))
        for stop in [4, 6] { // the end of epoch 1; the middle of epoch 2 (4 steps per epoch)
            let interrupted = try FineTuneWorkspace()
            let first = try FineTuner(interrupted.arguments(epochs: 3), events: { _ in })
            first.model.vit.parallelism = .serial
            try first.run(stopAfterStep: stop, events: { _ in })
            let state = try JSONDecoder().decode(TrainerState.self, from: Data(contentsOf: URL(fileURLWithPath: interrupted.outputDir + "/last/trainer_state.json")))
            XCTAssertEqual(state.globalStep, stop)
            let resumed = try train(interrupted.arguments(epochs: 3), resume: true)
            XCTAssertTrue(weights(resumed.model) == weights(reference.model), "resumed after step \(stop)")
            let log = try String(contentsOfFile: interrupted.outputDir + "/log.csv", encoding: .utf8)
            XCTAssertEqual(log, try String(contentsOfFile: straight.outputDir + "/log.csv", encoding: .utf8).replacingImagesPerSecond(with: log))
        }
    }

    /// The checkpoint is a model directory that reloads to the same logits, with the folder names as labels.
    func testCheckpointIsAModelDirectoryWithTheFolderLabels() throws {
        let workspace = try FineTuneWorkspace()
        let tuner = try train(workspace.arguments(epochs: 1))
        let reloaded = try ViTMSNForImageClassification.load(directory: workspace.outputDir + "/best")
        XCTAssertEqual(reloaded.config.id2label, [0: "jpeg", 1: "png"])
        XCTAssertEqual(reloaded.config.problemType, .singleLabelClassification)
        let pixels = Tensor(shape: [1, 3, 8, 8], repeating: 0.25)
        XCTAssertEqual(try reloaded.forward(pixelValues: pixels).logits.scalars, try tuner.model.forward(pixelValues: pixels).logits.scalars)
        for file in ["config.json", "model.safetensors", "preprocessor_config.json", "optimizer.safetensors", "trainer_state.json"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: workspace.outputDir + "/last/" + file), file)
        }
        for file in ["log.csv", "eval.csv", "curves.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: workspace.outputDir + "/" + file), file)
        }
        let log = try String(contentsOfFile: workspace.outputDir + "/log.csv", encoding: .utf8)
        XCTAssertEqual(log.split(separator: "\n").count, 1 + 4, "a row per optimizer step (16 training images, batch 4)")
        // Both logs count epochs done, as Transformers' log_history: the last step and the evaluation say 1.
        let lastStep = try XCTUnwrap(log.split(separator: "\n").last?.split(separator: ","))
        let evaluation = try XCTUnwrap(try String(contentsOfFile: workspace.outputDir + "/eval.csv", encoding: .utf8).split(separator: "\n").last?.split(separator: ","))
        XCTAssertEqual(Double(lastStep[1]), 1)
        XCTAssertEqual(Double(evaluation[1]), 1)
        XCTAssertEqual(Double(try XCTUnwrap(log.split(separator: "\n").dropFirst().first?.split(separator: ","))[1]), 0.25)
        XCTAssertTrue(try String(contentsOfFile: workspace.outputDir + "/curves.svg", encoding: .utf8).contains("<polyline"))
    }

    func testBadInputGetsClearErrors() throws {
        let empty = try FineTuneWorkspace(emptyClass: true)
        XCTAssertThrowsError(try FineTuner(empty.arguments(), events: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("/empty") && "\(error)".contains("has no images (bmp, gif, jpeg, jpg, png"), "\(error)")
        }
        let workspace = try FineTuneWorkspace()
        var strict = workspace.arguments()
        strict.ignoreMismatchedSizes = false
        XCTAssertThrowsError(try FineTuner(strict, events: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("--ignore-mismatched-sizes"), "\(error)")
        }
        XCTAssertThrowsError(try FineTuner(workspace.arguments(), resume: true, events: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("no checkpoint"), "\(error)")
        }
        for norm in [Float.nan, -1, .infinity] {  // refused at once, not at the first clipping
            var arguments = workspace.arguments()
            arguments.maxGradNorm = norm
            XCTAssertThrowsError(try FineTuner(arguments, events: { _ in })) { error in
                XCTAssertTrue("\(error)".contains("max grad norm"), "\(error)")
            }
        }
        // Output directories that cannot be: errors that say why (the tests run as root, so not read-only ones).
        let file = workspace.outputDir + "-file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        for (outputDir, reason) in [("", "empty path"), (file, "not a directory"), (file + "/run", "cannot create the output directory: Not a directory")] {
            var arguments = workspace.arguments()
            arguments.outputDir = outputDir
            XCTAssertThrowsError(try FineTuner(arguments, events: { _ in })) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(error)")
            }
        }
        var negative = workspace.arguments()
        negative.maxTrainSamples = -5
        XCTAssertThrowsError(try FineTuner(negative, events: { _ in })) { XCTAssertTrue("\($0)".contains("max train"), "\($0)") }
    }

    /// A run position no run can have in trainer_state.json (negative, fractional, beyond 2^40, the wrong
    /// type) is refused on --resume with the file and field named, instead of naming checkpoints wrongly.
    func testHostileRunStatesAreRefused() throws {
        let workspace = try FineTuneWorkspace()
        _ = try train(workspace.arguments(epochs: 1))
        let state = try FileManager.default.destinationOfSymbolicLink(atPath: workspace.outputDir + "/last")
        let path = workspace.outputDir + "/" + state + "/trainer_state.json"
        let original = try String(contentsOfFile: path, encoding: .utf8)
        for value in ["-5", "3.5", "99999999999999999999", "\"x\""] {
            let hostile = original.replacingOccurrences(of: #""global_step" : \d+"#, with: "\"global_step\" : \(value)", options: .regularExpression)
            XCTAssertNotEqual(hostile, original)
            try hostile.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try FineTuner(workspace.arguments(epochs: 2), resume: true, events: { _ in }), value) { error in
                XCTAssertTrue("\(error)".contains("trainer_state.json") && "\(error)".contains("global_step"), "\(value): \(error)")
            }
        }
    }

    /// A checkpoint whose files are cut short or not what they say is refused on --resume naming the file.
    func testCorruptCheckpointsAreRefusedOnResume() throws {
        let workspace = try FineTuneWorkspace()
        _ = try train(workspace.arguments(epochs: 1))
        let last = workspace.outputDir + "/" + (try FileManager.default.destinationOfSymbolicLink(atPath: workspace.outputDir + "/last"))
        for file in ["model.safetensors", "optimizer.safetensors", "trainer_state.json"] {
            let path = last + "/" + file
            let original = try Data(contentsOf: URL(fileURLWithPath: path))
            try original.prefix(100).write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try FineTuner(workspace.arguments(epochs: 2), resume: true, events: { _ in }), file) { error in
                XCTAssertTrue("\(error)".contains(path), "\(file): \(error)")
            }
            try original.write(to: URL(fileURLWithPath: path))
        }
        XCTAssertNoThrow(try FineTuner(workspace.arguments(epochs: 2), resume: true, events: { _ in }))
    }

    /// An earlier run's directory is never replaced unasked: without --resume or --overwrite-output-dir the
    /// run refuses it before touching anything.
    func testAnEarlierRunIsNotOverwrittenUnasked() throws {
        let workspace = try FineTuneWorkspace()
        try FileManager.default.createDirectory(atPath: workspace.outputDir, withIntermediateDirectories: true)
        let earlier = workspace.outputDir + "/log.csv"
        try Data("step,epoch\n".utf8).write(to: URL(fileURLWithPath: earlier))
        XCTAssertThrowsError(try FineTuner(workspace.arguments(), events: { _ in })) { error in
            XCTAssertTrue("\(error)".contains(workspace.outputDir) && "\(error)".contains("--overwrite-output-dir"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: earlier, encoding: .utf8), "step,epoch\n", "the earlier file is untouched")
        XCTAssertNoThrow(try FineTuner(workspace.arguments(), overwriteOutputDir: true, events: { _ in }))
    }

    /// Unreadable files are skipped and reported; the run goes on.
    func testUnreadableImagesAreSkippedAndCounted() throws {
        let workspace = try FineTuneWorkspace(extraFiles: ["jpeg/broken.jpg": Data("not a jpeg".utf8), "png/cut.png": Data([0x89, 0x50, 0x4E, 0x47])])
        var skipped: [String] = []
        var arguments = workspace.arguments(epochs: 1)
        arguments.validationDir = workspace.trainDir // every file is seen once per epoch, in both loaders
        _ = try train(arguments) { if case .skippedImages(let reasons) = $0 { skipped += reasons } }
        XCTAssertEqual(skipped.count, 4, "\(skipped)")
        XCTAssertTrue(skipped.contains { $0.contains("broken.jpg") } && skipped.contains { $0.contains("cut.png") }, "\(skipped)")
    }

    /// A loss that turns non-finite stops the run with a message, and `last` still holds the last good step.
    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        let workspace = try FineTuneWorkspace()
        var arguments = workspace.arguments(epochs: 3)
        (arguments.learningRate, arguments.warmupRatio, arguments.maxGradNorm, arguments.saveSteps) = (1e30, 0, 0, 1)
        XCTAssertThrowsError(try train(arguments)) { error in
            XCTAssertTrue("\(error)".contains("loss is"), "\(error)")
        }
        let last = try ViTMSNForImageClassification.load(directory: workspace.outputDir + "/last")
        XCTAssertTrue(last.namedParameters.allSatisfy { $0.tensor.scalars.allSatisfy(\.isFinite) })
    }
}
