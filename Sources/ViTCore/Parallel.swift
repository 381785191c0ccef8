import CKernels
import Dispatch
import Foundation

/// The forward pass's one level of parallelism: work is split into contiguous chunks run on `threads`
/// threads, and every product inside a chunk is single-threaded, so cores are never oversubscribed.
/// Elementwise, row-wise, per-head and GEMM work all give the same bits for any split.
public struct Parallelism: Sendable {
    public let threads: Int

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.threads = max(1, threads)
    }

    public static let serial = Parallelism(threads: 1)

    /// Runs `body` over `0..<count` in at most `threads` contiguous chunks of at least `minimumChunk` items.
    public func forEachChunk(of count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        forEachChunk(of: count, minimumChunk: minimumChunk) { _, range in body(range) }
    }

    /// The same, also telling `body` which chunk (0 ..< threads) it runs, for per-thread scratch memory.
    public func forEachChunk(of count: Int, minimumChunk: Int = 1, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
        let chunks = min(threads, max(1, count / max(minimumChunk, 1)))
        guard chunks > 1 else {
            if count > 0 { body(0, 0..<count) }
            return
        }
        run(chunks) { chunk in body(chunk, (chunk * count / chunks)..<((chunk + 1) * count / chunks)) }
    }

    /// Runs `body(task)` for every task in `0..<count` on at most `threads` threads, each thread taking the
    /// next task as it comes free. With several tasks a thread, a thread the host slows down leaves its
    /// remaining tasks to the others; `body` must not depend on which thread runs it.
    public func forEachTask(count: Int, _ body: (_ task: Int) -> Void) {
        guard threads > 1, count > 1 else {
            for task in 0..<count { body(task) }
            return
        }
        run(count, body)
    }

    private func run(_ chunks: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            var job = Job(body: body)
            let ran = withUnsafeMutablePointer(to: &job) { job in
                vitmsn_parallel_run(chunks, threads, { context, chunk in context!.assumingMemoryBound(to: Job.self).pointee.body(chunk) }, job) == 0
            }
            if !ran {  // nested, or another thread's job holds the pool: still at most `threads` at once
                let width = min(threads, chunks)
                let box = UncheckedSendable(job.body)
                DispatchQueue.concurrentPerform(iterations: width) { lane in
                    for chunk in stride(from: lane, to: chunks, by: width) { box.value(chunk) }
                }
            }
        }
    }
}

/// A chunked body as the C pool's tasks call it.
private struct Job {
    let body: (Int) -> Void
}

/// Carries a value into concurrent code whose callers guarantee the accesses are disjoint (chunks of one
/// buffer, one slot per iteration) or serialised.
package struct UncheckedSendable<Value>: @unchecked Sendable {
    package let value: Value
    package init(_ value: Value) { self.value = value }
}
