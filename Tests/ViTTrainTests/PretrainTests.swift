import Foundation
import ViTCore
import ViTIO
import ViTModel
import ViTVision
import XCTest
@testable import ViTTrain

/// Tiny MSN runs on the fixture photos (read as grayscale, 16 px views, a 1-layer 16-wide ViT).
final class PretrainTests: XCTestCase {
    private var workspace: FineTuneWorkspace!

    override func setUpWithError() throws { workspace = try FineTuneWorkspace() }
    override func tearDown() { workspace = nil }

    private func config(epochs: Int = 2) -> PretrainConfig {
        var c = PretrainConfig()
        c.architecture = ["hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32]
        (c.hiddenDim, c.outputDim, c.numProto, c.batchSize) = (16, 8, 8, 8)
        (c.dataset, c.outputDir) = (workspace.root, workspace.outputDir)  // root/train holds the classes
        (c.randSize, c.focalSize, c.focalViews) = (16, 8, 2)
        (c.epochs, c.warmup, c.probeEvery) = (epochs, 1, 0)
        return c
    }

    private func run(_ config: PretrainConfig, resume: Bool = false, stopAfterStep: Int? = nil) throws -> Pretrainer {
        let trainer = try Pretrainer(config, resume: resume, parallelism: .serial)
        try trainer.run(stopAfterStep: stopAfterStep) { _ in }
        return trainer
    }

    private func parameters(_ model: NN.Module) -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: model.namedParameters.map { ($0.name, $0.tensor.scalars) })
    }

    /// Three epochs in one go, and the same run stopped mid-epoch 2 then resumed, end with bit-identical
    /// anchor networks, target networks, prototypes and optimizer state, and the same log.
    func testResumedRunEndsBitIdentical() throws {
        let straight = try run(config(epochs: 3))
        let steps = straight.state.globalStep
        XCTAssertEqual(steps, 6) // 22 images, batches of 8 (the incomplete last one dropped, as MSN's loader does), 3 epochs
        let straightLog = try String(contentsOfFile: workspace.outputDir + "/log.csv", encoding: .utf8)
        try FileManager.default.removeItem(atPath: workspace.outputDir)

        let first = try run(config(epochs: 3), stopAfterStep: 5)
        XCTAssertEqual(first.state.globalStep, 5)
        let resumed = try run(config(epochs: 3), resume: true)
        XCTAssertEqual(resumed.state.globalStep, steps)
        XCTAssertEqual(parameters(resumed.model), parameters(straight.model))
        // The target's own prototypes are never used (the loss takes the anchor's), so only its encoder and head count.
        XCTAssertEqual(parameters(resumed.target.encoder), parameters(straight.target.encoder))
        XCTAssertEqual(parameters(resumed.target.head), parameters(straight.target.head))
        XCTAssertEqual(resumed.optimizer.state.tensors.mapValues(\.scalars), straight.optimizer.state.tensors.mapValues(\.scalars))
        let resumedLog = try String(contentsOfFile: workspace.outputDir + "/log.csv", encoding: .utf8)
        XCTAssertEqual(resumedLog.replacingImagesPerSecond(with: straightLog), straightLog)
        // The target moved away from its start, and the anchor from the target.
        XCTAssertNotEqual(parameters(straight.model), parameters(straight.target))
    }

    /// The checkpoint holds the target encoder as a Transformers model directory and the head and prototypes,
    /// which load back into an MSN model.
    func testCheckpointLoadsAsModelAndHead() throws {
        let trainer = try run(config(epochs: 1))
        let last = workspace.outputDir + "/last"
        let encoder = try ViTMSNModel.load(directory: last)
        XCTAssertEqual(parameters(encoder), parameters(trainer.target.encoder))
        let loaded = try MSNModel.load(directory: last)
        XCTAssertEqual(loaded.prototypes.scalars, trainer.model.prototypes.scalars)
        XCTAssertEqual(parameters(loaded.head), parameters(trainer.target.head))
        for file in ["log.csv", "curves.svg"] { XCTAssertTrue(FileManager.default.fileExists(atPath: workspace.outputDir + "/" + file), file) }
    }

    /// An infinite learning rate (weights become inf and NaN) stops the run at the first non-finite loss, and `last` still
    /// names the checkpoint of the last good epoch.
    func testNonFiniteLossStopsAndKeepsTheLastGoodCheckpoint() throws {
        _ = try run(config(epochs: 1))
        let good = try String(contentsOfFile: workspace.outputDir + "/last/trainer_state.json", encoding: .utf8)
        var exploding = config(epochs: 3)
        (exploding.startLR, exploding.lr, exploding.warmup) = (.infinity, .infinity, 0)
        XCTAssertThrowsError(try run(exploding, resume: true)) { error in
            XCTAssertTrue("\(error)".contains("loss is"), "\(error)")
        }
        XCTAssertEqual(try String(contentsOfFile: workspace.outputDir + "/last/trainer_state.json", encoding: .utf8), good)
        XCTAssertTrue(try ViTMSNModel.load(directory: workspace.outputDir + "/last").namedParameters.allSatisfy { $0.tensor.scalars.allSatisfy(\.isFinite) })
    }

    func testConfigErrorsNameTheField() throws {
        let path = workspace.root + "/config.json"
        /// The error of a minimal valid config with `changes` merged into its sections.
        func error(_ changes: [String: [String: Any]], base: Bool = true) -> String {
            var sections: [String: Any] = base ? ["meta": [:], "criterion": [:], "data": ["dataset": "fashion-mnist"], "optimization": ["epochs": 3]] : [:]
            for (name, fields) in changes {
                sections[name] = ((sections[name] as? [String: Any]) ?? [:]).merging(fields) { $1 }
            }
            try? JSONSerialization.data(withJSONObject: sections).write(to: URL(fileURLWithPath: path))
            do { _ = try PretrainConfig(path: path); return "" } catch { return "\(error)" }
        }
        XCTAssertEqual(error([:]), "", "the minimal config is valid")
        XCTAssertTrue(error(["meta": ["architecture": ["depth": 3]]]).contains("meta.architecture.depth"))
        XCTAssertTrue(error(["criterion": ["batch_size": "many"]]).contains("criterion.batch_size"))
        XCTAssertTrue(error(["data": ["rand_scale": [1.0, 0.3]]]).contains("data.rand_scale"))
        XCTAssertTrue(error(["data": ["patch_drop": 1.5]]).contains("data.patch_drop"))
        XCTAssertTrue(error(["meta": ["patch_drop": 0.5]]).contains("did you mean 'data.patch_drop'?"), "the official place of patch_drop")
        XCTAssertTrue(error(["criterion": ["batchsize": 64]]).contains("'criterion.batchsize': is not a field of 'criterion'; did you mean 'batch_size'?"))
        XCTAssertTrue(error(["optimisation": ["lr": 1]]).contains("did you mean 'optimization'?"))
        XCTAssertTrue(error([:], base: false).contains("field 'meta' is missing"), "an empty config says what it lacks")
        XCTAssertTrue(error(["data": ["dataset": NSNull()]]).contains("data.dataset"))
        // As strict as every config reader: 3.7 is not an integer, 1 is not true, true is not a number.
        XCTAssertTrue(error(["criterion": ["num_proto": 3.7]]).contains("criterion.num_proto"))
        XCTAssertTrue(error(["criterion": ["use_sinkhorn": 1]]).contains("criterion.use_sinkhorn"))
        XCTAssertTrue(error(["criterion": ["me_max": 0]]).contains("criterion.me_max"))
        XCTAssertTrue(error(["criterion": ["me_max": "no"]]).contains("criterion.me_max"))
        XCTAssertTrue(error(["criterion": ["temperature": true]]).contains("criterion.temperature"))
        XCTAssertTrue(error(["meta": ["architecture": ["hidden_size": 64.5]]]).contains("meta.architecture"))
        // Values out of range are errors, not traps or silent clamps.
        for (section, field, value) in [("meta", "seed", -1 as Any), ("meta", "seed", 1e30), ("meta", "hidden_dim", -1), ("optimization", "warmup", 1e300),
                                        ("optimization", "epochs", 1 << 62), ("data", "rand_scale", [-1, 5]), ("data", "color_jitter_strength", -5),
                                        ("data", "max_images", -5), ("data", "rand_views", 2)] {
            XCTAssertTrue(error([section: [field: value]]).contains("\(section).\(field)"), "\(section).\(field) = \(value)")
        }
        // YAML goes through the same decoder: the same strictness, the same field names.
        let yaml = workspace.root + "/config.yaml"
        func yamlError(_ text: String) -> String {
            try? text.write(toFile: yaml, atomically: true, encoding: .utf8)
            do { _ = try PretrainConfig(path: yaml); return "" } catch { return "\(error)" }
        }
        let rest = "meta: {}\ndata: {dataset: fashion-mnist}\noptimization: {epochs: 3}\n"
        XCTAssertEqual(yamlError("criterion: {}\n" + rest), "")
        XCTAssertTrue(yamlError("criterion:\n  num_proto: 3.7\n" + rest).contains("config.yaml: field 'criterion.num_proto': 3.7 is not an integer"))
        XCTAssertTrue(yamlError("criterion:\n  use_sinkhorn: 1\n" + rest).contains("'criterion.use_sinkhorn' has the wrong type"))
        XCTAssertTrue(yamlError("criterion: {}\n" + rest + "logging: {folder: .inf}\n").contains("NaN or infinity"))
        XCTAssertTrue(yamlError("meta: [1, 2]\ncriterion: {}\ndata: {dataset: x}\noptimization: {epochs: 3}\n").contains("'meta' has the wrong type"))
        XCTAssertTrue(yamlError("# only a comment\n").contains("the top level must be a mapping"), "an empty YAML file is an error")
        XCTAssertEqual(yamlError(("criterion: {}\n" + rest).replacingOccurrences(of: "\n", with: "\r\n")), "", "CRLF line ends")
        try #"{"meta": {}, "criterion": {"num_proto": 64}, "data": {"image_folder": "train", "root_path": "/datasets"}, "optimization": {"epochs": 7, "ema": [0.99, 1.0]}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let parsed = try PretrainConfig(path: path)
        XCTAssertEqual(parsed.epochs, 7)
        XCTAssertEqual(parsed.numProto, 64)
        XCTAssertEqual(parsed.emaStart, 0.99)
        XCTAssertEqual(parsed.dataset, "/datasets/train", "root_path/image_folder, as the official code joins them")
    }

    /// A config with every field of the official msn_vits16.yaml (its layout: patch_drop under data, logging.folder).
    func testOfficialLayoutLoads() throws {
        let path = workspace.root + "/official.yaml"
        try """
        criterion: {ent_weight: 0.0, final_sharpen: 0.25, me_max: true, memax_weight: 1.0, num_proto: 1024, start_sharpen: 0.25,
                    temperature: 0.1, batch_size: 64, use_ent: true, use_sinkhorn: true}
        data: {color_jitter_strength: 0.5, pin_mem: true, num_workers: 10, image_folder: imagenet/, label_smoothing: 0.0,
               patch_drop: 0.3, rand_size: 224, focal_size: 96, rand_views: 1, focal_views: 10, root_path: /datasets/}
        logging: {folder: /checkpoints/msn/, write_tag: msn-experiment-1}
        meta: {bottleneck: 1, copy_data: false, drop_path_rate: 0.0, hidden_dim: 2048, load_checkpoint: false, model_name: deit_small,
               output_dim: 256, read_checkpoint: null, use_bn: true, use_fp16: false, use_pred_head: false}
        optimization: {clip_grad: 3.0, epochs: 800, final_lr: 1.0e-06, final_weight_decay: 0.4, lr: 0.001, start_lr: 0.0002,
                       warmup: 15, weight_decay: 0.04}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let config = try PretrainConfig(path: path)
        XCTAssertEqual(config.patchDrop, 0.3)
        XCTAssertEqual(config.outputDir, "/checkpoints/msn/")
        XCTAssertEqual(config.dataset, "/datasets/imagenet")
        XCTAssertEqual(config.model, "small")
    }

    /// The YAML recipe of the released ViT-S/16 and the committed Fashion-MNIST JSON config both load.
    func testCommittedConfigsLoad() throws {
        let configs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("configs").path
        let vits16 = try PretrainConfig(path: configs + "/msn_vits16.yaml")
        XCTAssertEqual(vits16.model, "small")
        XCTAssertEqual(vits16.dataset, "imagenet")
        XCTAssertEqual([vits16.numProto, vits16.batchSize, vits16.focalSize, vits16.focalViews, vits16.epochs], [1024, 64, 96, 10, 800])
        XCTAssertEqual(vits16.focalScale, 0.05...0.3)
        XCTAssertEqual(vits16.finalLR, 1e-6)
        XCTAssertEqual(vits16.loss.sharpen, 0.25)
        XCTAssertTrue(vits16.loss.sinkhorn)
        let fashion = try PretrainConfig(path: configs + "/fashion_mnist_msn.json")
        XCTAssertEqual(fashion.dataset, "fashion-mnist")
        XCTAssertEqual(fashion.architecture["patch_size"], 7)
        let quick = try PretrainConfig(path: configs + "/fashion_mnist_msn_quick.json")  // the same recipe, shorter
        XCTAssertEqual([quick.epochs, fashion.epochs], [3, 18])
        XCTAssertEqual(quick.architecture, fashion.architecture)
    }

    /// Resuming without a checkpoint, a dataset folder that doesn't exist, or a class folder given where the
    /// layout's FOLDER belongs (FOLDER/train was passed, whose probe would look in FOLDER/train/train), fail with
    /// the path named.
    func testMissingInputsGetClearErrors() {
        XCTAssertThrowsError(try Pretrainer(config(), resume: true)) { XCTAssertTrue("\($0)".contains("no checkpoint"), "\($0)") }
        var missing = config()
        missing.dataset = workspace.root + "/nowhere"
        XCTAssertThrowsError(try Pretrainer(missing, resume: false)) { XCTAssertTrue("\($0)".contains("nowhere"), "\($0)") }
        var classes = config()
        (classes.dataset, classes.outputDir) = (workspace.trainDir, workspace.root + "/classes-run")
        XCTAssertThrowsError(try Pretrainer(classes, resume: false)) {
            XCTAssertTrue("\($0)".contains("expected the layout FOLDER/train") && "\($0)".contains(workspace.trainDir + "/train"), "\($0)")
        }
    }

    /// The schedules of msn_train.py: warm-up then cosine to 80 % of the way, cosine weight decay, linear EMA.
    func testSchedules() {
        var c = PretrainConfig()
        (c.epochs, c.warmup) = (10, 2)
        XCTAssertEqual(c.learningRate(step: 0, stepsPerEpoch: 100), c.startLR)
        XCTAssertEqual(c.learningRate(step: 200, stepsPerEpoch: 100), c.lr, accuracy: 1e-9)
        let end = c.finalLR + (c.lr - c.finalLR) * Float(0.5 * (1 + cos(Double.pi * 800 / 1050)))
        XCTAssertEqual(c.learningRate(step: 1000, stepsPerEpoch: 100), end, accuracy: 1e-7)
        XCTAssertEqual(c.weightDecay(step: 0, stepsPerEpoch: 100), c.weightDecay, accuracy: 1e-7)
        XCTAssertEqual(c.momentum(step: 1250, stepsPerEpoch: 100), 1, accuracy: 1e-7)
    }
}

final class MSNAugmentationTests: XCTestCase {
    /// Views have the configured size, are reproducible from the seed, differ between draws, and a grey
    /// image stays grey (colour jitter and grayscale keep R = G = B).
    func testViewsAreSeededSizedAndKeepGreyGrey() {
        var processor = ImageProcessor()
        (processor.height, processor.width) = (12, 12)
        let augmentation = MSNViewAugmentation(processor: processor, size: 12, scale: 0.05...0.3)
        let grey = Image(width: 40, height: 30, mode: .RGB, pixels: (0..<(40 * 30)).flatMap { i -> [UInt8] in
            let v = UInt8(i % 251); return [v, v, v]
        })
        var a = SeededGenerator(seed: 3), b = SeededGenerator(seed: 3)
        let first = augmentation.pixelValues(grey, using: &a)
        XCTAssertEqual(first.shape, [3, 12, 12])
        XCTAssertEqual(first.scalars, augmentation.pixelValues(grey, using: &b).scalars)
        XCTAssertNotEqual(first.scalars, augmentation.pixelValues(grey, using: &a).scalars)
        let plane = 144
        for i in 0..<plane { // normalised with mean = std = 0.5 on every channel, so equal channels stay equal
            XCTAssertEqual(first.scalars[i], first.scalars[plane + i])
            XCTAssertEqual(first.scalars[i], first.scalars[2 * plane + i])
        }
    }
}
