import Dispatch
import Foundation

/// Values computed on a background queue one index ahead of the consumer, handed over in order.
package final class Prefetched<Value>: @unchecked Sendable {
    private var slots: [Value?]
    private let ready: [DispatchSemaphore]
    private let lock = NSLock()
    private let produce: (Int) -> Value

    package init(count: Int, produce: @escaping (Int) -> Value) {
        slots = Array(repeating: nil, count: count)
        ready = (0..<count).map { _ in DispatchSemaphore(value: 0) }
        self.produce = produce
        start(0)
    }

    private func start(_ index: Int) {
        guard index < slots.count else { return }
        DispatchQueue.global().async { [self] in
            let value = produce(index)
            lock.withLock { slots[index] = value }
            ready[index].signal()
        }
    }

    /// Waits for value `index` and starts computing the next.
    package func take(_ index: Int) -> Value {
        ready[index].wait()
        start(index + 1)
        return lock.withLock {
            defer { slots[index] = nil }
            return slots[index]!
        }
    }
}
