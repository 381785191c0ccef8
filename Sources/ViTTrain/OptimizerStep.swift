import CKernels
import ViTDistributed
import ViTCore
import ViTModel

/// Settings that act on the whole process, so they are explicit calls rather than side effects of training.
public enum ProcessSettings {
    /// Training allocates and frees the same large activation buffers every step. glibc serves such blocks
    /// with fresh `mmap`s and returns them on `free`, so every step would fault in (and the kernel zero)
    /// hundreds of megabytes again; this keeps freed blocks in the heap for the next step to reuse (the
    /// process keeps its peak heap). Call it once before training; it does nothing without glibc.
    public static func keepFreedMemoryInHeap() { vitmsn_keep_freed_memory() }
}

/// How parameters are updated: the fine-tuning flags of Transformers' `TrainingArguments` that shape a step.
public struct OptimizationSettings: Codable, Sendable {
    public var learningRate: Float
    public var weightDecay: Float
    public var schedule: LearningRateSchedule
    public var warmupSteps: Int
    public var totalSteps: Int
    public var maxGradNorm: Float       // 0 turns clipping off
    public var accumulationSteps: Int

    public init(learningRate: Float, weightDecay: Float, schedule: LearningRateSchedule, warmupSteps: Int, totalSteps: Int, maxGradNorm: Float = 1, accumulationSteps: Int = 1) {
        (self.learningRate, self.weightDecay, self.schedule, self.warmupSteps) = (learningRate, weightDecay, schedule, warmupSteps)
        (self.totalSteps, self.maxGradNorm, self.accumulationSteps) = (totalSteps, maxGradNorm, accumulationSteps)
    }

    /// The learning rate of optimiser step `step` (0-based).
    public func learningRate(atStep step: Int) -> Float {
        Float(Double(learningRate) * schedule.multiplier(step: step, totalSteps: totalSteps, warmupSteps: warmupSteps))
    }
}

extension LearningRateSchedule: Codable {}

/// What one optimiser step reports.
public struct StepReport: Sendable {
    public var loss: Float          // mean over the micro-batches
    public var correct: Int         // top-1 hits (single-label targets)
    public var learningRate: Float
    public var gradientNorm: Float  // before clipping
    public var images: Int          // in the step's micro-batches, over every rank
}

/// How a data-parallel step cuts its micro-batches: this rank's shards of each (ranges into its rows, the
/// same count for every micro-batch), their global index (for dropout), the gradient tree, the job.
public struct DataParallelStep {
    public var shards: [[Range<Int>]]
    public var firstShard: Int
    public var gradients: ShardedGradients
    public var communicator: Communicator
}

/// One optimiser step of a classifier as Transformers' Trainer takes it: each micro-batch's loss divided by
/// the accumulation steps and back-propagated, gradients clipped by global norm, then the update at the
/// scheduled rate. Only parameters with gradient slots are trained: with `trainBackbone` false, allocate the
/// classifier's alone (linear probing).
///
/// With `dataParallel`, each micro-batch is this rank's part of a global one: shard by shard (every
/// micro-batch's shard j, then j + 1), each shard's loss weighted by its share of the global micro-batch,
/// its gradients taken into the tree; dropout draws per (step, micro-batch, global shard), so the step is
/// the same for any number of ranks.
public func optimizerStep(
    _ model: ViTMSNForImageClassification, optimizer: Optimizer, microBatches: [(pixels: Tensor, labels: [Int64])],
    settings: OptimizationSettings, trainBackbone: Bool = true, dropout: inout NN.Dropout?, dataParallel: DataParallelStep? = nil
) throws -> StepReport {
    let communicator = dataParallel?.communicator ?? SingleProcess()
    let shards = dataParallel?.shards ?? microBatches.map { [0..<$0.labels.count] }
    var rows = microBatches.map { Double($0.labels.count) }
    communicator.allReduceSum(&rows, label: "the micro-batches' image counts")
    guard rows.contains(where: { $0 > 0 }) else { throw TrainingError("no image of step \(optimizer.stepCount + 1)'s batches could be read") }
    let stepSeed = dataParallel != nil && dropout != nil ? dropout!.generator.next() : nil
    let scale = 1 / Float(microBatches.count)
    var totals = [0.0, 0.0] // the loss, the top-1 hits
    let shardCount = shards.first?.count ?? 0
    dataParallel?.gradients.begin(shards: shardCount)
    for j in 0..<shardCount {
        let lastMicroBatch = microBatches.indices.last { !shards[$0][j].isEmpty }
        for (m, batch) in microBatches.enumerated() where !shards[m][j].isEmpty {
            let range = shards[m][j]
            if let stepSeed, let shard = dataParallel?.firstShard { dropout!.generator = SeededGenerator(seed: stepSeed, m, shard + j) }
            let pixels = range.count == batch.labels.count ? batch.pixels : batch.pixels.rows(range)
            let labels = Array(batch.labels[range])
            let (batchLoss, logits, activations) = try model.forwardTraining(
                pixelValues: pixels, labels: .classIndices(labels), trainBackbone: trainBackbone, dropout: &dropout)
            guard batchLoss.isFinite else { throw TrainingError("the loss is \(batchLoss) at step \(optimizer.stepCount + 1): stopping before the weights are changed") }
            let weight = scale * Float(range.count) / Float(rows[m])
            model.backward(activations, lossScale: weight, gradientsReady: m == lastMicroBatch ? dataParallel?.gradients.ready : nil)
            totals[0] += Double(batchLoss * weight)
            totals[1] += Double(topOneHits(logits, labels: labels))
        }
        dataParallel?.gradients.endShard()
    }
    dataParallel?.gradients.finish()
    communicator.allReduceSum(&totals, label: "the step's loss")
    let norm = clipGradientNorm(model, maxNorm: settings.maxGradNorm > 0 ? settings.maxGradNorm : .infinity)
    let learningRate = settings.learningRate(atStep: optimizer.stepCount)
    optimizer.step(model, learningRate: learningRate, weightDecay: settings.weightDecay)
    model.zeroGradients(allocating: false)
    return StepReport(loss: Float(totals[0]), correct: Int(totals[1]), learningRate: learningRate, gradientNorm: norm, images: Int(rows.reduce(0, +)))
}

/// How many rows of `logits` (B, labels) have their largest value at the label.
package func topOneHits(_ logits: Tensor, labels: [Int64]) -> Int {
    let width = logits.shape[1]
    let values = logits.scalars
    return labels.enumerated().filter { b, label in
        let row = values[(b * width)..<((b + 1) * width)]
        return Int64(row.indices.max { row[$0] < row[$1] }! - b * width) == label
    }.count
}
