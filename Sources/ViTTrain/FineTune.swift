import Foundation
import ViTCore
import ViTDistributed
import ViTIO
import ViTModel
import ViTMSN
import ViTVision

/// The arguments of a fine-tuning run, Transformers' `run_image_classification.py` names in snake case when
/// saved (`finetune_args.json` in the output directory).
public struct FineTuneArguments: Codable, Sendable {
    public var model: String
    public var trainDir: String?             // an image folder; nil with `dataset` fashion-mnist
    public var dataset: String?              // "fashion-mnist" (Debian's dataset-fashion-mnist)
    public var validationDir: String?
    public var validationSplit = 0.15        // of the training data, when there is no validation folder
    public var outputDir: String
    public var epochs = 3
    public var batchSize = 32
    public var microBatchSize: Int?          // images per shard of a batch (data parallelism; default batch / 4)
    public var learningRate: Float = 5e-5
    public var weightDecay: Float = 0
    public var warmupRatio = 0.0
    public var lrScheduler = LearningRateSchedule.linear
    public var optimizer = "adamw"           // or "sgd" (momentum 0.9)
    public var seed: UInt64 = 42
    public var gradientAccumulationSteps = 1
    public var maxGradNorm: Float = 1
    public var freezeBackbone = false
    public var maxTrainSamples: Int?
    public var maxEvalSamples: Int?
    public var ignoreMismatchedSizes = false
    public var saveSteps = 0                 // 0: a checkpoint at the end of every epoch only

    public init(model: String, outputDir: String) { (self.model, self.outputDir) = (model, outputDir) }

    enum CodingKeys: String, CodingKey {
        case model, dataset, epochs, seed, optimizer
        case trainDir = "train_dir", validationDir = "validation_dir", validationSplit = "validation_split"
        case outputDir = "output_dir", batchSize = "batch_size", microBatchSize = "micro_batch_size", learningRate = "learning_rate"
        case weightDecay = "weight_decay", warmupRatio = "warmup_ratio", lrScheduler = "lr_scheduler_type"
        case gradientAccumulationSteps = "gradient_accumulation_steps", maxGradNorm = "max_grad_norm"
        case freezeBackbone = "freeze_backbone", maxTrainSamples = "max_train_samples", maxEvalSamples = "max_eval_samples"
        case ignoreMismatchedSizes = "ignore_mismatched_sizes", saveSteps = "save_steps"
    }
}

/// Where a run stands: written with every checkpoint (`trainer_state.json`), read by `--resume`.
public struct TrainerState: Codable, Sendable {
    public var globalStep = 0
    public var epoch = 0
    public var batchInEpoch = 0          // the next micro-batch of `epoch`
    public var dropoutState: UInt64 = 0  // the dropout generator
    public var bestAccuracy: Double?
    public var bestCheckpoint: String?
    public var optimizerSteps = 0

    enum CodingKeys: String, CodingKey {
        case epoch
        case globalStep = "global_step", batchInEpoch = "batch_in_epoch", dropoutState = "dropout_rng_state"
        case bestAccuracy = "best_metric", bestCheckpoint = "best_model_checkpoint", optimizerSteps = "optimizer_steps"
    }
}

/// What the run reports as it goes.
public enum FineTuneEvent {
    case started(trainImages: Int, validationImages: Int, classes: [String], stepsPerEpoch: Int, totalSteps: Int, resumedAt: Int?)
    case step(epoch: Int, batch: Int, batchesPerEpoch: Int, report: StepReport, imagesPerSecond: Double)
    case evaluated(epoch: Int, step: Int, loss: Double, accuracy: Double, isBest: Bool)
    case skippedImages([String])
    case saved(path: String)
    case warning(String)
}

/// Fine-tunes `ViTMSNForImageClassification` on an image folder or Fashion-MNIST, like Transformers'
/// `run_image_classification.py`: RandomResizedCrop + flip for training, resize for evaluation, AdamW with a
/// warm-up schedule, evaluation and a checkpoint every epoch, best and last kept.
///
/// Data-parallel under MPI (`communicator`) as `Pretrainer` is: the batch size is the global batch, cut into
/// shards computed by the ranks and summed as one tree, so N ranks run the one-process run bit for bit;
/// evaluation is split over the ranks; rank 0 alone reports, logs and saves.
public final class FineTuner {
    public let arguments: FineTuneArguments
    public let model: ViTMSNForImageClassification
    public let processor: ImageProcessor
    let train: BatchLoader<Tensor>
    let validation: BatchLoader<Tensor>
    let optimizer: Optimizer
    let settings: OptimizationSettings
    /// Where the run stands (its step, best accuracy and checkpoint), as trainer_state.json records it.
    public private(set) var state = TrainerState()
    let checkpoints: CheckpointDirectory
    public let communicator: Communicator
    let shards: BatchShards
    var gradients: ShardedGradients!
    /// Optimizer steps between checks that every rank holds the same parameters (0: never).
    public var checksumEvery = 100

    /// Prepares a run; with `resume`, from the output directory's last checkpoint. An output directory that
    /// holds files needs `resume` or `overwriteOutputDir`.
    public init(_ arguments: FineTuneArguments, resume: Bool = false, overwriteOutputDir: Bool = false,
                communicator: Communicator = SingleProcess(), events: (FineTuneEvent) -> Void) throws {
        self.arguments = arguments
        self.communicator = communicator
        try Self.validate(arguments)
        shards = try BatchShards(batchSize: arguments.batchSize, microBatchSize: arguments.microBatchSize, ranks: communicator.size, field: "micro batch size")
        let writer = communicator.rank == 0
        checkpoints = writer ? try CheckpointDirectory(arguments.outputDir, resume: resume, overwrite: overwriteOutputDir) : CheckpointDirectory(reading: arguments.outputDir)
        communicator.barrier("start-up (rank 0 prepares the output directory)")
        let resumeFrom = resume ? try checkpoints.last() : nil
        if resume && resumeFrom == nil { throw TrainingError("\(arguments.outputDir): --resume, but there is no checkpoint to resume from ('last' is missing)") }
        let modelDirectory = resumeFrom ?? arguments.model
        let channels = try ModelDirectory.config(modelDirectory).numChannels
        let (trainData, validationData) = try Self.datasets(arguments, grayscale: channels == 1)
        model = try ViTMSNForImageClassification.load(
            directory: modelDirectory, labels: trainData.classNames, ignoreMismatchedSizes: arguments.ignoreMismatchedSizes,
            seed: arguments.seed, warn: { events(.warning($0)) })
        processor = try ImageProcessor.load(modelDirectory: modelDirectory, orDefaultFor: model.config)
        let augmentation = TrainingAugmentation(processor: processor)
        let processor = processor
        let (shards, rank, ranks) = (shards, communicator.rank, communicator.size)
        train = BatchLoader(dataset: trainData, batchSize: arguments.batchSize, shuffle: true, seed: arguments.seed,
                            shard: { shards.images(of: rank, ranks: ranks, in: $0) }) { image, generator in
            augmentation.pixelValues(image, using: &generator)
        }
        validation = BatchLoader(dataset: validationData, batchSize: arguments.batchSize, shuffle: false, seed: arguments.seed,
                                 shard: { [communicator] in communicator.slice(of: $0) }) { image, _ in
            processor.evaluationPixelValues(image)
        }
        let stepsPerEpoch = (train.batchesPerEpoch + arguments.gradientAccumulationSteps - 1) / arguments.gradientAccumulationSteps
        let totalSteps = stepsPerEpoch * arguments.epochs
        settings = OptimizationSettings(
            learningRate: arguments.learningRate, weightDecay: arguments.weightDecay, schedule: arguments.lrScheduler,
            warmupSteps: Int((arguments.warmupRatio * Double(totalSteps)).rounded(.up)), totalSteps: totalSteps,
            maxGradNorm: arguments.maxGradNorm, accumulationSteps: arguments.gradientAccumulationSteps)
        optimizer = arguments.optimizer == "sgd" ? SGD(momentum: 0.9) : AdamW()
        if arguments.freezeBackbone { model.classifier!.zeroGradients() } else { model.zeroGradients() }
        if let resumeFrom {
            state = try readResumeState(from: resumeFrom, optimizer: optimizer, model: model)
        }
        gradients = ShardedGradients(model, communicator: communicator)
        if writer { events(.started(
            trainImages: trainData.count, validationImages: validationData.count, classes: trainData.classNames,
            stepsPerEpoch: stepsPerEpoch, totalSteps: totalSteps, resumedAt: resumeFrom == nil ? nil : state.globalStep)) }
    }

    static func validate(_ a: FineTuneArguments) throws {
        guard a.epochs > 0, a.batchSize > 0, a.gradientAccumulationSteps > 0 else {
            throw TrainingError("epochs, batch size and gradient accumulation steps must be positive")
        }
        guard a.learningRate > 0, a.learningRate.isFinite, a.weightDecay >= 0, a.weightDecay.isFinite, (0..<1).contains(a.warmupRatio) else {
            throw TrainingError("learning rate must be positive, weight decay non-negative, warm-up ratio in [0, 1)")
        }
        // Checked here, not at the first clipping or checkpoint an epoch later.
        guard a.maxGradNorm >= 0, a.maxGradNorm.isFinite else {
            throw TrainingError("max grad norm must be a finite number ≥ 0 (0: no clipping), not \(a.maxGradNorm)")
        }
        guard a.saveSteps >= 0, (a.maxTrainSamples ?? 1) > 0, (a.maxEvalSamples ?? 1) > 0 else {
            throw TrainingError("save steps must be ≥ 0, and max train / eval samples positive")
        }
        guard (a.trainDir == nil) != (a.dataset == nil) else { throw TrainingError("give either a training folder or --dataset fashion-mnist") }
        guard a.dataset == nil || a.dataset == "fashion-mnist" else { throw TrainingError("unknown dataset '\(a.dataset!)' (known: fashion-mnist)") }
        guard ["adamw", "sgd"].contains(a.optimizer) else { throw TrainingError("unknown optimizer '\(a.optimizer)' (adamw or sgd)") }
        guard a.validationDir != nil || a.dataset != nil || (0 < a.validationSplit && a.validationSplit < 1) else {
            throw TrainingError("validation split must be in (0, 1) without a validation folder")
        }
    }

    /// Training and validation data: the folders given, Fashion-MNIST's train/test files, or a seeded split.
    static func datasets(_ a: FineTuneArguments, grayscale: Bool) throws -> (LabeledImages, LabeledImages) {
        var train: LabeledImages
        var validation: LabeledImages
        if a.dataset != nil {
            train = try FashionMNIST.load(train: true, grayscale: grayscale)
            validation = try FashionMNIST.load(train: false, grayscale: grayscale)
        } else {
            train = try ImageFolder(root: a.trainDir!, grayscale: grayscale)
            if let validationDir = a.validationDir {
                validation = try ImageFolder(root: validationDir, grayscale: grayscale)
                guard validation.classNames == train.classNames else {
                    throw TrainingError("\(validationDir): classes \(validation.classNames) differ from the training folder's \(train.classNames)")
                }
            } else {
                var generator = SeededGenerator(seed: a.seed, -1)
                let order = Array(0..<train.count).shuffled(using: &generator)
                let held = max(1, Int(Double(train.count) * a.validationSplit))
                guard held < train.count else { throw TrainingError("\(a.trainDir!): too few images (\(train.count)) to split off a validation set") }
                validation = Subset(train, indices: Array(order[..<held]).sorted())
                train = Subset(train, indices: Array(order[held...]).sorted())
            }
        }
        if let limit = a.maxTrainSamples, limit < train.count {
            var generator = SeededGenerator(seed: a.seed, -2)
            train = Subset(train, indices: Array(Array(0..<train.count).shuffled(using: &generator).prefix(limit)).sorted())
        }
        if let limit = a.maxEvalSamples, limit < validation.count {
            var generator = SeededGenerator(seed: a.seed, -3)
            validation = Subset(validation, indices: Array(Array(0..<validation.count).shuffled(using: &generator).prefix(limit)).sorted())
        }
        return (train, validation)
    }

    /// Trains to the last epoch, evaluating and saving a checkpoint at every epoch's end (and every
    /// `saveSteps`). Throws on a non-finite loss, leaving the last checkpoint as it was. With `stopAfterStep`
    /// the run saves and stops there (a session with a time budget), to be continued with `--resume`.
    /// Only rank 0 reports `events`, logs and saves.
    public func run(stopAfterStep: Int? = nil, events: (FineTuneEvent) -> Void) throws {
        let writer = communicator.rank == 0
        func report(_ event: FineTuneEvent) { if writer { events(event) } }
        let log = writer ? try TrainingLog(directory: arguments.outputDir, resumingAt: state.globalStep) : nil
        var dropout: NN.Dropout? = NN.Dropout(config: model.config, seed: state.globalStep == 0 ? arguments.seed : state.dropoutState)
        let accumulation = arguments.gradientAccumulationSteps
        let (rank, ranks) = (communicator.rank, communicator.size)
        while state.epoch < arguments.epochs {
            var pending: [LoadedBatch<Tensor>] = []
            var started = Date()
            let batches = train.batches(epoch: state.epoch, from: state.batchInEpoch)
            while let batch = batches.next() {
                state.batchInEpoch += 1
                if !batch.skipped.isEmpty { events(.skippedImages(batch.skipped)) } // every rank's own
                pending.append(batch)
                guard pending.count == accumulation || state.batchInEpoch == train.batchesPerEpoch else { continue }
                let parallel = DataParallelStep(
                    shards: pending.map { shards.local($0, rank: rank, ranks: ranks) }, firstShard: shards.owned(by: rank, of: ranks).lowerBound,
                    gradients: gradients, communicator: communicator)
                let stepReport = try optimizerStep(
                    model, optimizer: optimizer, microBatches: pending.map { ($0.pixels, $0.labels) }, settings: settings,
                    trainBackbone: !arguments.freezeBackbone, dropout: &dropout, dataParallel: parallel)
                state.globalStep += 1
                state.dropoutState = dropout!.generator.state
                if checksumEvery > 0, state.globalStep % checksumEvery == 0 {
                    communicator.requireAgreement(on: parameterChecksum([model]), label: "the parameter checksum after step \(state.globalStep)")
                }
                let speed = Double(stepReport.images) / Date().timeIntervalSince(started)
                let epochsDone = Double(state.epoch) + Double(state.batchInEpoch) / Double(train.batchesPerEpoch)
                try log?.step(state.globalStep, epoch: epochsDone, report: stepReport, imagesPerSecond: speed)
                report(.step(epoch: state.epoch, batch: state.batchInEpoch, batchesPerEpoch: train.batchesPerEpoch, report: stepReport, imagesPerSecond: speed))
                (pending, started) = ([], Date())
                let midEpoch = state.batchInEpoch < train.batchesPerEpoch
                if writer && midEpoch && (state.globalStep == stopAfterStep || (arguments.saveSteps > 0 && state.globalStep % arguments.saveSteps == 0)) {
                    report(.saved(path: try save()))
                }
                if midEpoch && state.globalStep == stopAfterStep { return }
            }
            let (loss, accuracy) = try evaluate(events: events)
            let isBest = accuracy > (state.bestAccuracy ?? -1)
            (state.epoch, state.batchInEpoch) = (state.epoch + 1, 0)
            if isBest { (state.bestAccuracy, state.bestCheckpoint) = (accuracy, String(format: "checkpoint-%06d", state.globalStep)) }
            try log?.evaluation(state.globalStep, epoch: state.epoch, loss: loss, accuracy: accuracy)
            report(.evaluated(epoch: state.epoch, step: state.globalStep, loss: loss, accuracy: accuracy, isBest: isBest))
            if writer {
                report(.saved(path: try save(best: isBest)))
                try log?.drawCurves()
            }
            if state.globalStep == stopAfterStep { return }
        }
    }

    /// Mean loss and top-1 accuracy on the validation set (eval mode), each rank evaluating a slice of it.
    public func evaluate(events: (FineTuneEvent) -> Void = { _ in }) throws -> (loss: Double, accuracy: Double) {
        var (totalLoss, correct, seen) = (0.0, 0, 0)
        var config = model.config
        let batches = validation.batches(epoch: 0)
        while let batch = batches.next() {
            if !batch.skipped.isEmpty { events(.skippedImages(batch.skipped)) }
            guard !batch.labels.isEmpty else { continue }
            let logits = try model.forward(pixelValues: batch.pixels).logits
            let loss = try classificationLoss(logits: logits, labels: .classIndices(batch.labels), config: &config).loss
            totalLoss += Double(loss) * Double(batch.labels.count)
            correct += topOneHits(logits, labels: batch.labels)
            seen += batch.labels.count
        }
        var totals = [totalLoss, Double(correct), Double(seen)]
        communicator.allReduceSum(&totals, label: "the validation totals")
        (totalLoss, correct, seen) = (totals[0], Int(totals[1]), Int(totals[2]))
        guard seen > 0 else { throw TrainingError("no validation image could be read") }
        return (totalLoss / Double(seen), Double(correct) / Double(seen))
    }

    /// Writes a checkpoint (model directory, processor, optimizer, state) and points `last` (and `best`, when
    /// `best`, the checkpoint of the best accuracy so far) at it; each switch is one atomic rename.
    func save(best: Bool = false) throws -> String {
        let name = String(format: "checkpoint-%06d", state.globalStep)
        state.optimizerSteps = optimizer.stepCount
        let path = try checkpoints.write(name) { directory in
            try model.save(directory: directory)
            try processor.save(modelDirectory: directory)
            try writeResumeState(state, optimizer: optimizer, to: directory)
            try writePrettyJSON(arguments, to: directory + "/finetune_args.json")
        }
        try checkpoints.point("last", at: name)
        if best { try checkpoints.point("best", at: name) }
        try checkpoints.removeUnreferenced()
        return path
    }
}
