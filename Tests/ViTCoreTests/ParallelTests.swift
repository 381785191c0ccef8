import Foundation
import XCTest
@testable import ViTCore

final class ParallelTests: XCTestCase {
    /// Counts how often each item of `0..<count` is visited by one `forEachChunk`.
    static func visits(_ parallelism: Parallelism, count: Int, nested: Bool = false) -> [Int] {
        let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: count)
        defer { counts.deallocate() }
        counts.initialize(repeating: 0)
        let shared = UncheckedSendable(counts)
        parallelism.forEachChunk(of: count) { chunk, range in
            XCTAssertLessThan(chunk, parallelism.threads)
            if nested {  // a job inside a job runs another way, still once per item
                Parallelism(threads: 2).forEachChunk(of: range.count) { inner in
                    for i in inner { shared.value[range.lowerBound + i] += 1 }
                }
            } else {
                for i in range { shared.value[i] += 1 }
            }
        }
        return Array(counts)
    }

    func testEveryItemRunsOnceAcrossManyShortJobs() {
        for threads in [1, 2, 3, 8] {
            for count in [0, 1, 2, 7, 1000] {
                for _ in 0..<50 {
                    XCTAssertEqual(Self.visits(Parallelism(threads: threads), count: count), [Int](repeating: 1, count: count), "\(threads) threads, \(count) items")
                }
            }
        }
        XCTAssertEqual(Self.visits(Parallelism(threads: 4), count: 64, nested: true), [Int](repeating: 1, count: 64))
    }

    func testEveryTaskRunsOnceOnAtMostItsThreads() {
        for threads in [1, 2, 3, 8, 2] {  // 2 again: workers started for 8 must stay out of a job for 2
            for count in [0, 1, 2, 7, 1000] {
                let lock = NSLock()
                var runs = [Int](repeating: 0, count: count)
                var runners = Set<ObjectIdentifier>()
                Parallelism(threads: threads).forEachTask(count: count) { task in
                    lock.withLock { runs[task] += 1; runners.insert(ObjectIdentifier(Thread.current)) }
                }
                XCTAssertEqual(runs, [Int](repeating: 1, count: count), "\(threads) threads, \(count) tasks")
                XCTAssertLessThanOrEqual(runners.count, threads, "\(threads) threads, \(count) tasks")
            }
        }
    }

    /// Task 0 holds its thread until every other task has run, which only a pool that hands tasks to whichever
    /// thread is free (not a fixed share to each) lets happen; it gives up after 10 s.
    func testTasksGoToWhicheverThreadIsFree() {
        let lock = NSLock()
        var runs = 0, othersRanFirst = false
        Parallelism(threads: 2).forEachTask(count: 8) { task in
            lock.withLock { runs += 1 }
            guard task == 0 else { return }
            let deadline = Date().addingTimeInterval(10)
            while !othersRanFirst, Date() < deadline {
                othersRanFirst = lock.withLock { runs == 8 }
                usleep(1000)
            }
        }
        XCTAssertTrue(othersRanFirst, "tasks 1 ... 7 waited for the thread that ran task 0")
        XCTAssertEqual(runs, 8)
    }

    func testJobsFromSeveralThreadsAtOnce() {
        let wrong = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
        defer { wrong.deallocate() }
        wrong.initialize(repeating: 0)
        let perThread = UncheckedSendable(wrong)
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for _ in 0..<200 where Self.visits(Parallelism(threads: 3), count: 97) != [Int](repeating: 1, count: 97) {
                perThread.value[thread] += 1
            }
        }
        XCTAssertEqual(Array(wrong), [0, 0, 0, 0], "a job submitted while another runs still visits every item once")
    }
}
