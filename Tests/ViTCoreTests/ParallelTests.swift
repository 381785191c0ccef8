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
