import Foundation
import ViTMSN

/// Why a queued request got no result.
enum BatchError: Error, Equatable {
    case queueFull(Int)
    case timedOut
    case shuttingDown
    case failed(String)
}

/// Dynamic batching for one model. Requests queue; one worker thread takes up to `maxBatchSize` images at a
/// time, waiting at most `maxQueueDelay` after the oldest request for a batch to fill (and only while other
/// requests are still on their way, reading or decoding: with none, waiting cannot fill it), and runs one forward
/// at a time (the forward itself uses the model's `parallelism`), so the cores are never oversubscribed by
/// concurrent forwards. A request leaves the queue when it times out; its images are then never computed.
final class DynamicBatcher: @unchecked Sendable { // all mutable state is guarded by `condition`
    struct Settings: Sendable {
        var maxBatchSize: Int
        var maxQueueDelay: Double // seconds
        var maxQueue: Int         // images waiting, beyond which requests are refused
    }

    /// One request: its images (C, H, W), what it wants back, and how to answer it (once).
    private final class Job: @unchecked Sendable { // `answer` is read and cleared under the batcher's lock
        let pixels: [Tensor]
        let outputs: Set<OutputName>
        let enqueued = DispatchTime.now()
        private var answer: ((Result<[ImageOutputs], BatchError>) -> Void)?
        var timer: DispatchSourceTimer?

        init(pixels: [Tensor], outputs: Set<OutputName>, answer: @escaping (Result<[ImageOutputs], BatchError>) -> Void) {
            (self.pixels, self.outputs, self.answer) = (pixels, outputs, answer)
        }

        /// The answer, the first time only (under the batcher's lock): a job times out or completes, not both.
        func takeAnswer() -> ((Result<[ImageOutputs], BatchError>) -> Void)? {
            defer { (answer, timer) = (nil, nil) }
            timer?.cancel() // an answered job's timer goes at once, not when it would have fired
            return answer
        }
    }

    let model: ServedModel
    let settings: Settings
    let metrics: ModelMetrics
    private let condition = NSCondition()
    private var queue: [Job] = []
    private var queuedImages = 0 { didSet { metrics.queueDepth.set(to: Double(queuedImages)) } }
    private var stopping = false
    private var arriving = 0 // requests between `arrive()` and `submit` (reading and decoding their images)
    private let finished = DispatchSemaphore(value: 0)

    init(model: ServedModel, settings: Settings, metrics: ModelMetrics) {
        (self.model, self.settings, self.metrics) = (model, settings, metrics)
        let worker = Thread { [self] in work() }
        worker.name = "vitmsn-batcher-\(model.name)"
        worker.start()
    }

    /// A request that will submit images soon: a forming batch waits for it, up to the queue delay.
    final class Arrival: @unchecked Sendable { // `pending` is read and cleared under the batcher's lock
        fileprivate weak var batcher: DynamicBatcher?
        fileprivate var pending = true
        fileprivate init(_ batcher: DynamicBatcher) { self.batcher = batcher }

        /// On `submit`, or when the request fails before it; the second call does nothing.
        func leave() { batcher?.leave(self) }
    }

    func arrive() -> Arrival {
        condition.lock()
        defer { condition.unlock() }
        arriving += 1
        return Arrival(self)
    }

    private func leave(_ arrival: Arrival) {
        condition.lock()
        defer { condition.unlock() }
        guard arrival.pending else { return }
        (arrival.pending, arriving) = (false, arriving - 1)
        condition.signal()
    }

    /// The outputs of each of `pixels`, computed in whatever batch the worker forms; fails after `timeout`
    /// seconds, at once when the queue is full, or when the server is stopping.
    func submit(_ pixels: [Tensor], outputs: Set<OutputName>, timeout: Double, arrival: Arrival? = nil) async throws -> [ImageOutputs] {
        try await withCheckedThrowingContinuation { continuation in
            condition.lock()
            defer { condition.unlock() }
            if stopping { return continuation.resume(throwing: BatchError.shuttingDown) }
            if queuedImages > 0 && queuedImages + pixels.count > settings.maxQueue {
                return continuation.resume(throwing: BatchError.queueFull(settings.maxQueue))
            }
            let job = Job(pixels: pixels, outputs: outputs) { continuation.resume(with: $0) }
            let timer = DispatchSource.makeTimerSource(queue: .global())
            timer.schedule(deadline: .now() + timeout)
            timer.setEventHandler { [weak self, weak job] in
                if let self, let job { self.expire(job) }
            }
            job.timer = timer
            timer.resume()
            queue.append(job)
            queuedImages += pixels.count
            if let arrival, arrival.pending { (arrival.pending, arriving) = (false, arriving - 1) } // queued now
            condition.signal()
        }
    }

    /// Answers a job that is past its timeout: unqueued if it has not started, its result discarded if it has.
    private func expire(_ job: Job) {
        condition.lock()
        if let index = queue.firstIndex(where: { $0 === job }) {
            queue.remove(at: index)
            queuedImages -= job.pixels.count
        }
        let answer = job.takeAnswer()
        condition.unlock()
        answer?(.failure(.timedOut))
    }

    /// Stops taking requests, finishes the queued ones, and returns when the worker has exited.
    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
        finished.wait()
    }

    private func work() {
        while let batch = nextBatch() {
            run(batch)
        }
        finished.signal()
    }

    /// Waits for work, then for the batch to fill or the oldest request's delay to pass; nil when stopped
    /// with nothing left.
    private func nextBatch() -> [Job]? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty {
            if stopping { return nil }
            condition.wait()
        }
        let fillBy = Date(timeIntervalSinceNow: settings.maxQueueDelay
            - Double(DispatchTime.now().uptimeNanoseconds - queue[0].enqueued.uptimeNanoseconds) / 1e9)
        while !queue.isEmpty, queuedImages < settings.maxBatchSize, !stopping, arriving > 0, condition.wait(until: fillBy) {}
        var batch: [Job] = []
        var images = 0
        while let next = queue.first, batch.isEmpty || images + next.pixels.count <= settings.maxBatchSize {
            batch.append(queue.removeFirst())
            images += next.pixels.count
        }
        queuedImages -= images
        return batch
    }

    /// One forward over the batch's images; each job gets its own rows.
    private func run(_ batch: [Job]) {
        guard !batch.isEmpty else { return }
        let pixels = batch.flatMap(\.pixels)
        let outputs = batch.reduce(into: Set<OutputName>()) { $0.formUnion($1.outputs) }
        let started = DispatchTime.now()
        let result = Result { try model.run(Tensor.stacked(pixels), outputs: outputs) }
            .mapError { BatchError.failed("\($0)") }
        metrics.inferenceSeconds.record(Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9)
        metrics.batchSize.record(Double(pixels.count))
        condition.lock()
        let answers = batch.map { $0.takeAnswer() }
        condition.unlock()
        var first = 0
        for (job, answer) in zip(batch, answers) {
            let rows = first..<(first + job.pixels.count)
            first = rows.upperBound
            answer?(result.map { Array($0[rows]) })
        }
    }
}
