import ArgumentParser
import Foundation
import ViTTrain

extension LearningRateSchedule: ExpressibleByArgument {}

struct FineTune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune a ViT-MSN classifier on a folder of images (one sub-folder per class) or Fashion-MNIST.",
        discussion: """
        The Swift counterpart of Transformers' run_image_classification.py. The output directory gets a checkpoint \
        per epoch (checkpoint-NNNNNN, with 'last' and 'best' links: Transformers model directories), log.csv, \
        eval.csv and curves.svg.

        Data-parallel under mpirun (mpirun -np N vitmsn finetune …): --batch-size is the global batch, cut into         shards of --micro-batch-size images that the ranks share; the run equals the one-process run bit for bit.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Training images: one sub-folder per class.") var trainDir: String?
    @Option(help: "Built-in dataset instead of --train-dir: fashion-mnist (Debian's dataset-fashion-mnist; its test set validates).") var dataset: String?
    @Option(help: "Validation images, same classes (default: split off the training folder).") var validationDir: String?
    @Option(help: "Fraction of the training folder held out when there is no --validation-dir.") var validationSplit = 0.15
    @Option(help: "Where checkpoints and logs go.") var outputDir: String
    @Option(help: "Passes over the training images.") var epochs = 3
    @Option(help: "Images per batch (per optimizer step, times --gradient-accumulation-steps), over all ranks under mpirun.") var batchSize = 32
    @Option(help: "Images per shard of a batch, the unit the ranks share under mpirun (default: batch / 4 when it divides).") var microBatchSize: Int?
    @Option(help: "Under mpirun: optimizer steps between checks that every rank holds the same parameters (0: never).") var checksumEvery = 100
    @Option(help: "Peak learning rate of the schedule.") var learningRate: Float = 5e-5
    @Option(help: "Decoupled weight decay (AdamW); none on biases, norms, CLS and position embeddings.") var weightDecay: Float = 0
    @Option(help: "Fraction of the steps spent warming the learning rate up from 0.") var warmupRatio = 0.0
    @Option(help: "constant, constant_with_warmup, linear or cosine.") var lrScheduler = LearningRateSchedule.linear
    @Option(help: "adamw or sgd (momentum 0.9).") var optimizer = "adamw"
    @Option(help: "Seed of the classifier's initialisation, the shuffling, the augmentation and dropout.") var seed: UInt64 = 42
    @Option(help: "Batches whose gradients add up before each optimizer step.") var gradientAccumulationSteps = 1
    @Option(help: "Clip gradients to this global norm (0: no clipping).") var maxGradNorm: Float = 1
    @Flag(help: "Train the classifier only (linear probing).") var freezeBackbone = false
    @Option(help: "Train on the first N training images only (after the validation split).") var maxTrainSamples: Int?
    @Option(help: "Validate on the first N validation images only.") var maxEvalSamples: Int?
    @Flag(help: "Re-initialise a classifier whose label count differs from the data's.") var ignoreMismatchedSizes = false
    @Option(help: "Also save a checkpoint every N optimizer steps (0: at the end of each epoch only).") var saveSteps = 0
    @Flag(help: "Continue from the output directory's last checkpoint.") var resume = false
    @Flag(help: "Write into an output directory that already holds files (an earlier run's checkpoints are replaced).") var overwriteOutputDir = false
    @Flag(help: "Print the run's summary as one JSON object on stdout (progress goes to stderr).") var json = false
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var job: JobOptions

    func run() throws {
        ProcessSettings.keepFreedMemoryInHeap()
        var arguments = FineTuneArguments(model: try modelOptions.directory(), outputDir: outputDir)
        (arguments.trainDir, arguments.dataset, arguments.validationDir, arguments.validationSplit) = (trainDir, dataset, validationDir, validationSplit)
        (arguments.epochs, arguments.batchSize, arguments.learningRate, arguments.weightDecay) = (epochs, batchSize, learningRate, weightDecay)
        arguments.microBatchSize = microBatchSize
        (arguments.warmupRatio, arguments.lrScheduler, arguments.optimizer, arguments.seed) = (warmupRatio, lrScheduler, optimizer, seed)
        (arguments.gradientAccumulationSteps, arguments.maxGradNorm, arguments.freezeBackbone) = (gradientAccumulationSteps, maxGradNorm, freezeBackbone)
        (arguments.maxTrainSamples, arguments.maxEvalSamples) = (maxTrainSamples, maxEvalSamples)
        (arguments.ignoreMismatchedSizes, arguments.saveSteps) = (ignoreMismatchedSizes, saveSteps)
        let display = TrainingDisplay(messagesToStandardError: json)
        try job.run { communicator in
            do {
                let tuner = try FineTuner(arguments, resume: resume, overwriteOutputDir: overwriteOutputDir, communicator: communicator, events: display.show)
                tuner.model.vit.parallelism = threading.parallelism(in: communicator)
                tuner.checksumEvery = checksumEvery
                try tuner.run(events: display.show)
                display.finish()
                if json, communicator.rank == 0 {
                    let summary: [String: Any] = [
                        "output_dir": outputDir, "best_checkpoint": tuner.state.bestCheckpoint as Any, "best_accuracy": tuner.state.bestAccuracy as Any,
                        "global_step": tuner.state.globalStep, "epochs": arguments.epochs, "skipped_images": display.skipped,
                        "last_evaluation": display.lastEvaluation.map { ["epoch": $0.epoch, "step": $0.step, "loss": $0.loss, "accuracy": $0.accuracy] } as Any,
                    ]
                    print(String(decoding: try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys]), as: UTF8.self))
                }
            } catch let error as TrainingError {
                display.finish()
                throw CLIError(error.description + (FileManager.default.fileExists(atPath: outputDir + "/last") ? " (the last good checkpoint is \(outputDir)/last)" : ""))
            }
        }
    }
}

/// Renders fine-tuning events: a progress bar per epoch, a line per evaluation, skipped files counted.
final class TrainingDisplay {
    private var bar: ProgressBar?
    private var barEpoch = -1
    private(set) var skipped = 0
    private(set) var lastEvaluation: (epoch: Int, step: Int, loss: Double, accuracy: Double)?
    /// With `--json`, stdout carries the summary only.
    private let messagesToStandardError: Bool

    init(messagesToStandardError: Bool = false) { self.messagesToStandardError = messagesToStandardError }

    private func message(_ line: String) {
        if messagesToStandardError { FileHandle.standardError.write(Data((line + "\n").utf8)) } else { say(line) }
    }

    func show(_ event: FineTuneEvent) {
        switch event {
        case let .started(trainImages, validationImages, classes, stepsPerEpoch, totalSteps, resumedAt):
            message("training on \(trainImages) images, validating on \(validationImages); \(classes.count) classes: \(classes.prefix(10).joined(separator: ", "))\(classes.count > 10 ? ", …" : "")")
            message("\(stepsPerEpoch) optimizer steps per epoch, \(totalSteps) in all" + (resumedAt.map { "; resuming after step \($0)" } ?? ""))
        case let .step(epoch, batch, batchesPerEpoch, report, imagesPerSecond):
            if epoch != barEpoch {
                bar?.finish(done: batchesPerEpoch)
                bar = ProgressBar(total: batchesPerEpoch, label: "epoch \(epoch + 1)", unit: "batch")
                barEpoch = epoch
            }
            bar?.update(done: batch, status: String(format: "loss %.4f  lr %.2e  %.1f img/s", report.loss, report.learningRate, imagesPerSecond))
        case let .evaluated(epoch, step, loss, accuracy, isBest):
            lastEvaluation = (epoch, step, loss, accuracy)
            bar?.finish(done: nil)
            bar = nil
            message(String(format: "epoch %d (step %d): validation loss %.4f, accuracy %.2f %%%@", epoch, step, loss, accuracy * 100, isBest ? " (best)" : ""))
        case .skippedImages(let reasons):
            skipped += reasons.count
            for reason in reasons { warn("skipped unreadable image: \(reason)") }
        case .saved(let path):
            message("saved \(path)")
        case .warning(let message):
            warn(message)
        }
    }

    func finish() {
        bar?.finish(done: nil)
        if skipped > 0 { warn("\(skipped) unreadable images were skipped") }
    }
}
