import Foundation
import ViTCore
import ViTDistributed
import ViTModel

// Data parallelism that gives the one-process run bit for bit. A global batch is cut into a fixed number of
// shards of contiguous samples (`micro_batch_size` images each), whatever the number of ranks N; rank r
// computes shards r·S/N ..< (r+1)·S/N. Every shard's encoder forward and backward is the same computation
// on every N, and the shards' gradients are summed as one balanced binary tree: the rank's own shards
// locally, then across ranks by recursive halving-doubling (`MPICommunicator`), which continues the same
// tree. The layers that mix samples (MSN's BatchNorm head, its loss with Sinkhorn and me-max; a classifier's
// loss) run on the global batch's CLS tokens, gathered to every rank, so they are the one-process
// computation too. Exact when S and N are powers of two with N ≤ S; otherwise equal to float tolerance.

/// The shards of a global batch of `count` images.
public struct BatchShards: Sendable {
    public let count: Int

    /// `batchSize / microBatchSize` shards; the micro-batch must divide the batch and the shards the ranks.
    public init(batchSize: Int, microBatchSize: Int?, ranks: Int, field: String) throws {
        let micro = microBatchSize ?? Self.defaultMicroBatch(batchSize)
        guard micro > 0, batchSize % micro == 0 else {
            throw TrainingError("\(field) \(micro) must divide the batch size \(batchSize)")
        }
        count = batchSize / micro
        guard count % ranks == 0 else {
            throw TrainingError("the batch's \(count) shards (batch \(batchSize) / \(field) \(micro)) cannot be split evenly over \(ranks) ranks: choose a \(field) that makes the shard count a multiple of \(ranks)")
        }
    }

    /// Four shards when the batch allows (jobs of 1, 2 or 4 ranks), else two or one. Smaller shards cost the
    /// one-process run speed (measured on the default model, 2 threads: 8 shards of 16 images −12 %, 4 of 32
    /// about −3 %); more ranks need a smaller `micro_batch_size`.
    static func defaultMicroBatch(_ batchSize: Int) -> Int {
        let shards = [4, 2].first { batchSize % $0 == 0 } ?? 1
        return batchSize / shards
    }

    /// The images `range(s, of: n)` of shard `s` in a batch of `n` (the last batch of an epoch may be short).
    public func range(_ shard: Int, of images: Int) -> Range<Int> { (shard * images / count)..<((shard + 1) * images / count) }

    /// The shards rank `rank` of `ranks` computes.
    public func owned(by rank: Int, of ranks: Int) -> Range<Int> { (rank * count / ranks)..<((rank + 1) * count / ranks) }

    /// The images of a batch of `images` that rank `rank` loads: its shards' images.
    public func images(of rank: Int, ranks: Int, in images: Int) -> Range<Int> {
        let shards = owned(by: rank, of: ranks)
        return range(shards.lowerBound, of: images).lowerBound..<range(shards.upperBound - 1, of: images).upperBound
    }

    /// This rank's loaded samples cut into its shards: ranges into `batch.samples`.
    func local<Sample>(_ batch: LoadedBatch<Sample>, rank: Int, ranks: Int) -> [Range<Int>] {
        owned(by: rank, of: ranks).map { shard in
            let wanted = range(shard, of: batch.requested)
            let first = batch.positions.firstIndex { $0 >= wanted.lowerBound } ?? batch.positions.count
            let end = batch.positions.firstIndex { $0 >= wanted.upperBound } ?? batch.positions.count
            return first..<end
        }
    }
}

/// The trainable tensors' gradients over the shards: after each shard's backward they are taken out of the
/// model, bucket by bucket (PyTorch DDP's ~4 MB buckets, in reverse registration order, which is about the
/// order the backward completes them), into a per-bucket binary-tree sum; the last shard's buckets go to the
/// communication thread as soon as they are complete, so the all-reduce overlaps the rest of the backward.
/// `finish()` writes the global sums back. Tensors `include` rejects (computed on the global batch on every
/// rank, like MSN's head) are left alone.
public final class ShardedGradients {
    let communicator: Communicator
    private let module: NN.Module
    private struct Bucket {
        var names: [String]
        var offsets: [String: Int]
        var count: Int
    }
    private var buckets: [Bucket] = []
    private var trees: [[(level: Int, values: [Float])]]  // per bucket: the binary counter of partial sums
    private var captured = 0                              // buckets taken from the model for the current shard
    private var readyPrefixes: [String] = []
    private var shardsLeft = 0
    private var results: [PendingReduction?]
    /// Seconds spent all-reducing gradients, and the part of it the backward did not hide.
    public private(set) var reductionSeconds = 0.0, exposedSeconds = 0.0
    /// Floats all-reduced per step.
    public let floatsPerStep: Int

    public init(_ module: NN.Module, communicator: Communicator, include: (String) -> Bool = { _ in true }, bucketCapacity: Int = 1 << 20) {
        (self.module, self.communicator) = (module, communicator)
        var tensors: [(String, Int)] = []
        module.visitParameters { name, value, gradient in if gradient != nil && include(name) { tensors.append((name, value.count)) } }
        for (name, count) in tensors.reversed() {
            if buckets.isEmpty || (buckets[buckets.count - 1].count + count > bucketCapacity && buckets[buckets.count - 1].count > 0) {
                buckets.append(Bucket(names: [], offsets: [:], count: 0))
            }
            buckets[buckets.count - 1].offsets[name] = buckets[buckets.count - 1].count
            buckets[buckets.count - 1].names.append(name)
            buckets[buckets.count - 1].count += count
        }
        floatsPerStep = buckets.reduce(0) { $0 + $1.count }
        trees = Array(repeating: [], count: buckets.count)
        results = Array(repeating: nil, count: buckets.count)
    }

    /// A step over `shards` shards of this rank begins.
    public func begin(shards: Int) {
        precondition(shards > 0)
        (shardsLeft, captured, readyPrefixes) = (shards, 0, [])
    }

    /// The current shard's backward has completed every tensor whose name starts with `prefix`.
    public func ready(_ prefix: String) {
        readyPrefixes.append(prefix)
        while captured < buckets.count, buckets[captured].names.allSatisfy({ name in readyPrefixes.contains { name.hasPrefix($0) } }) {
            capture(captured)
        }
    }

    /// The current shard is done (also for a shard without images, whose gradients are zero).
    public func endShard() {
        while captured < buckets.count { capture(captured) }
        shardsLeft -= 1
        (captured, readyPrefixes) = (0, [])
    }

    /// Waits for the all-reduces and writes the global sums into the gradients.
    public func finish() {
        precondition(shardsLeft == 0, "finish() before every shard ended")
        let waitStart = Date()
        let sums = results.map { $0!.wait() }
        if communicator.isDistributed {
            let reducing = results.reduce(0) { $0 + $1!.seconds }
            // The wait may also hold the queue's earlier work and thread start-up: count at most the reductions.
            exposedSeconds += min(Date().timeIntervalSince(waitStart), reducing)
            reductionSeconds += reducing
        }
        module.visitParameters { name, _, gradient in
            guard let b = buckets.firstIndex(where: { $0.offsets[name] != nil }) else { return }
            let offset = buckets[b].offsets[name]!
            gradient!.withUnsafeMutableBufferPointer { g in sums[b].withUnsafeBufferPointer { s in
                g.baseAddress!.update(from: s.baseAddress! + offset, count: g.count)
            } }
        }
        results = Array(repeating: nil, count: buckets.count)
    }

    /// Moves bucket `index`'s gradients out of the model (zeroing them there) into its tree.
    private func capture(_ index: Int) {
        let bucket = buckets[index]
        var values = [Float](repeating: 0, count: bucket.count)
        module.visitParameters { name, _, gradient in
            guard let offset = bucket.offsets[name] else { return }
            gradient!.withUnsafeMutableBufferPointer { g in
                values.withUnsafeMutableBufferPointer { v in (v.baseAddress! + offset).update(from: g.baseAddress!, count: g.count) }
                g.update(repeating: 0)
            }
        }
        var tree = trees[index]
        tree.append((0, values))
        while tree.count > 1, tree[tree.count - 1].level == tree[tree.count - 2].level {
            let right = tree.removeLast(), left = tree.removeLast()
            tree.append((left.level + 1, added(left.values, right.values)))
        }
        if shardsLeft == 1 { // the last shard: this rank's sum is complete
            var sum = tree.removeLast().values
            while let left = tree.popLast() { sum = added(left.values, sum) }
            results[index] = communicator.startAllReduceSum(sum, label: "gradient bucket \(index + 1) of \(buckets.count)")
        }
        trees[index] = tree
        captured += 1
    }

    private func added(_ a: [Float], _ b: [Float]) -> [Float] {
        var sum = a
        sum.withUnsafeMutableBufferPointer { s in b.withUnsafeBufferPointer { b in for i in s.indices { s[i] += b[i] } } }
        return sum
    }
}

extension Communicator {
    /// Every rank's rows of a view-major (views·b_r, width) matrix, in rank order per view: the global
    /// (views·Σb_r, width) matrix, and where this rank's samples are in it. Each rank fills its own rows of a
    /// zeroed buffer and the buffers are summed, which is exact.
    func gatherViewMajor(_ local: Tensor, views: Int) -> (global: Tensor, samples: Range<Int>, batch: Int) {
        let width = local.shape[1]
        let rows = local.shape[0] / views
        guard isDistributed else { return (local, 0..<rows, rows) }
        let counts = allGather([Double(rows)], label: "the shards' image counts").map { Int($0[0]) }
        let (total, offset) = (counts.reduce(0, +), counts[..<rank].reduce(0, +))
        var global = [Float](repeating: 0, count: views * total * width)
        local.withUnsafeBufferPointer { l in
            global.withUnsafeMutableBufferPointer { g in
                for v in 0..<views {
                    (g.baseAddress! + (v * total + offset) * width).update(from: l.baseAddress! + v * rows * width, count: rows * width)
                }
            }
        }
        allReduceSum(&global, label: "the batch's CLS tokens")
        return (Tensor(shape: [views * total, width], scalars: global), offset..<(offset + rows), total)
    }

    /// Waits until every rank gets here.
    func barrier(_ label: String) { _ = sum(0, label: label) }
}

/// Rows `samples` of each of the `views` blocks of a view-major (views·batch, …) tensor, view-major.
func viewRows(_ x: Tensor, views: Int, batch: Int, samples: Range<Int>) -> Tensor {
    Tensor.concatenated((0..<views).map { v in x.rows((v * batch + samples.lowerBound)..<(v * batch + samples.upperBound)) })
}

/// A 64-bit FNV-1a hash of every parameter's bits (and of `buffers`), for checking that replicas agree.
func parameterChecksum(_ modules: [NN.Module], buffers: [Tensor] = []) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    func mix(_ tensor: Tensor) {
        tensor.withUnsafeBufferPointer { values in
            for value in values { hash = (hash ^ UInt64(value.bitPattern)) &* 0x100_0000_01b3 }
        }
    }
    for module in modules { module.visitParameters { _, value, _ in mix(value) } }
    buffers.forEach(mix)
    return hash
}
