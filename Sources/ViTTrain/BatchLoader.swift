import Dispatch
import Foundation
import ViTCore
import ViTVision

/// A batch ready for the model: one transformed sample per readable image.
public struct LoadedBatch<Sample>: @unchecked Sendable {
    public var samples: [Sample]  // (B)
    public var labels: [Int64]    // (B)
    public var skipped: [String]  // why samples of this batch could not be read
    public var positions: [Int]   // (B) each sample's place in the global batch
    public var requested: Int     // images the global batch asked for (of every rank)
}

extension LoadedBatch where Sample == Tensor {
    /// The samples stacked (B, C, H, W).
    public var pixels: Tensor { samples.isEmpty ? Tensor(zeros: [0]) : Tensor.stacked(samples) }
}

/// Batches of a dataset in a seeded order: epoch `e` is a permutation drawn from (seed, e), and sample `i` of
/// epoch `e` is transformed with its own generator (seed, e, i), so a run resumed at any batch sees exactly
/// what an uninterrupted one would. The next batch is prepared on a background queue while the caller
/// computes, its samples decoded in parallel. A sample is whatever the transform makes of an image: pixel
/// values for fine-tuning, the list of views for MSN.
///
/// In a data-parallel job every rank draws the same order and loads only its `shard` (a contiguous slice)
/// of each global batch; since the transforms are seeded by the global sample index, the union of the ranks'
/// samples is exactly the one-process batch.
public final class BatchLoader<Sample>: @unchecked Sendable {
    public typealias Transform = @Sendable (Image, inout SeededGenerator) -> Sample

    public let dataset: LabeledImages
    public let batchSize: Int
    let shuffle: Bool
    let seed: UInt64
    let transform: Transform
    /// Drop the epoch's last batch when incomplete (the MSN code's `drop_last=True`).
    let dropLast: Bool
    /// Which rows of each batch this process loads, from the batch's length.
    let shard: @Sendable (Int) -> Range<Int>

    public init(dataset: LabeledImages, batchSize: Int, shuffle: Bool, seed: UInt64, dropLast: Bool = false,
                shard: @escaping @Sendable (Int) -> Range<Int> = { 0..<$0 }, transform: @escaping Transform) {
        precondition(batchSize > 0, "batch size must be positive")
        (self.dataset, self.batchSize, self.shuffle, self.seed, self.transform) = (dataset, batchSize, shuffle, seed, transform)
        (self.dropLast, self.shard) = (dropLast, shard)
    }

    public var batchesPerEpoch: Int { dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize }

    /// The sample order of `epoch`.
    public func order(epoch: Int) -> [Int] {
        guard shuffle else { return Array(0..<dataset.count) }
        var generator = SeededGenerator(seed: seed, epoch)
        return Array(0..<dataset.count).shuffled(using: &generator)
    }

    /// Batches `first..<batchesPerEpoch` of `epoch`, each prepared while the previous one is used (the
    /// pipelines' `Prefetched`, so training and inference overlap decoding with compute the same way).
    public func batches(epoch: Int, from first: Int = 0) -> AnyIterator<LoadedBatch<Sample>> {
        let order = order(epoch: epoch)
        let count = max(0, batchesPerEpoch - first)
        let prefetched = Prefetched(count: count) { i in
            let index = first + i
            let batch = order[(index * self.batchSize)..<min((index + 1) * self.batchSize, order.count)]
            let mine = self.shard(batch.count)
            return self.load(Array(batch.dropFirst(mine.lowerBound).prefix(mine.count)), epoch: epoch, at: mine.lowerBound, of: batch.count)
        }
        var next = 0
        return AnyIterator {
            guard next < count else { return nil }
            defer { next += 1 }
            return prefetched.take(next)
        }
    }

    /// The samples at `indices` (this process's part, from place `first` of a global batch of `requested`),
    /// transformed; unreadable ones are left out and reported.
    func load(_ indices: [Int], epoch: Int, at first: Int, of requested: Int) -> LoadedBatch<Sample> {
        var views = [Sample?](repeating: nil, count: indices.count)
        var errors = [String?](repeating: nil, count: indices.count)
        views.withUnsafeMutableBufferPointer { viewSlots in
            errors.withUnsafeMutableBufferPointer { errorSlots in
                let (views, errors) = (UncheckedSendable(viewSlots), UncheckedSendable(errorSlots))
                DispatchQueue.concurrentPerform(iterations: indices.count) { i in
                    do {
                        var generator = SeededGenerator(seed: seed, epoch, indices[i])
                        views.value[i] = transform(try dataset.image(at: indices[i]), &generator)
                    } catch {
                        errors.value[i] = "\(error)"
                    }
                }
            }
        }
        let kept = indices.indices.filter { views[$0] != nil }
        return LoadedBatch(samples: kept.map { views[$0]! }, labels: kept.map { Int64(dataset.labels[indices[$0]]) }, skipped: errors.compactMap { $0 },
                           positions: kept.map { first + $0 }, requested: requested)
    }
}
