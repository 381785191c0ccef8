import Foundation

/// The processes of a data-parallel job and the collectives they share. Every reduction sums in an order
/// fixed by the job's size alone, so each rank gets the same bits and a run repeats exactly. A collective that
/// cannot complete (a rank died or hangs) ends the whole job with a message naming the rank waited for.
public protocol Communicator: AnyObject, Sendable {
    var rank: Int { get }
    var size: Int { get }

    /// Sums `values` element-wise over the ranks, in place. `label` names the reduction in error messages.
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>, label: String)
    func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>, label: String)

    /// Starts summing `values` on the communication thread while the caller computes (a gradient bucket).
    func startAllReduceSum(_ values: [Float], label: String) -> PendingReduction

    /// Ends every process of the job, printing `message` first.
    func abort(_ message: String) -> Never

    /// Leaves the job (MPI_Finalize): call once, when this rank's work is done.
    func finish()
}

/// A reduction under way; `wait()` gives the sum.
public final class PendingReduction: @unchecked Sendable {
    private var values: [Float]
    private let done = DispatchSemaphore(value: 0)
    /// Seconds the reduction itself took on the communication thread (not the time spent queued).
    public private(set) var seconds = 0.0

    init(_ values: [Float]) { self.values = values }

    /// Runs the reduction now (single-process, or on the communication thread).
    func run(_ reduce: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let start = DispatchTime.now().uptimeNanoseconds
        values.withUnsafeMutableBufferPointer { reduce($0) }
        seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        done.signal()
    }

    public func wait() -> [Float] {
        done.wait()
        done.signal() // later waits return at once
        return values
    }
}

extension Communicator {
    public var isDistributed: Bool { size > 1 }

    public func allReduceSum(_ values: inout [Float], label: String) {
        values.withUnsafeMutableBufferPointer { allReduceSum($0, label: label) }
    }

    public func allReduceSum(_ values: inout [Double], label: String) {
        values.withUnsafeMutableBufferPointer { allReduceSum($0, label: label) }
    }

    public func sum(_ value: Double, label: String) -> Double {
        var values = [value]
        allReduceSum(&values, label: label)
        return values[0]
    }

    /// Every rank's `values` (the same count on each), in rank order: each rank fills its own slot of a zeroed
    /// buffer and the buffers are summed, which is exact (x + 0 = x).
    public func allGather(_ values: [Double], label: String) -> [[Double]] {
        let count = values.count
        var slots = [Double](repeating: 0, count: count * size)
        slots.replaceSubrange((rank * count)..<((rank + 1) * count), with: values)
        allReduceSum(&slots, label: label)
        return (0..<size).map { Array(slots[($0 * count)..<(($0 + 1) * count)]) }
    }

    /// Rows computed by different ranks, gathered on every rank: this rank holds `rows` for the places
    /// `mine` of `count` (nil where it failed); the result has a row wherever some rank had one. Exact, as
    /// each place is filled on one rank only (with a presence flag beside it).
    public func gatherRows(_ rows: [[Float]?], at mine: Range<Int>, count: Int, width: Int, label: String) -> [[Float]?] {
        guard isDistributed else { return rows }
        var buffer = [Float](repeating: 0, count: count * (width + 1))
        for (row, place) in zip(rows, mine) {
            guard let row else { continue }
            buffer.replaceSubrange((place * (width + 1))..<(place * (width + 1) + width), with: row)
            buffer[place * (width + 1) + width] = 1
        }
        allReduceSum(&buffer, label: label)
        return (0..<count).map { place in
            buffer[place * (width + 1) + width] == 0 ? nil : Array(buffer[(place * (width + 1))..<(place * (width + 1) + width)])
        }
    }

    /// The rows `0..<count` this rank takes of a global batch: a contiguous slice, the first `count % size`
    /// ranks one longer.
    public func slice(of count: Int) -> Range<Int> { (rank * count / size)..<((rank + 1) * count / size) }

    /// Stops the job unless every rank holds the same `checksum` (the bit pattern of the parameters' hash).
    public func requireAgreement(on checksum: UInt64, label: String) {
        guard isDistributed else { return }
        // Four 16-bit pieces, each exact in a Double.
        let pieces = (0..<4).map { Double((checksum >> (16 * UInt64($0))) & 0xFFFF) }
        let all = allGather(pieces, label: label)
        let disagreeing = all.indices.filter { all[$0] != pieces }
        if !disagreeing.isEmpty {
            abort("rank \(rank): \(label): the parameters of rank(s) \(disagreeing.map(String.init).joined(separator: ", ")) differ from this rank's; the replicas diverged")
        }
    }
}

/// One process: every collective is the identity.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>, label: String) {}
    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>, label: String) {}
    public func startAllReduceSum(_ values: [Float], label: String) -> PendingReduction {
        let pending = PendingReduction(values)
        pending.run { _ in }
        return pending
    }
    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data(("vitmsn: " + message + "\n").utf8))
        exit(1)
    }
    public func finish() {}
}

/// The job this process belongs to: an MPI job when a launcher started it (`mpirun`, `srun` with PMIx),
/// else a single process. MPI is loaded at run time, so nothing links against it.
public func communicatorFromEnvironment(collectiveTimeout: Double = 120) throws -> Communicator {
    let environment = ProcessInfo.processInfo.environment
    let launched = ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"].contains { environment[$0] != nil }
    return launched ? try MPICommunicator(collectiveTimeout: collectiveTimeout) : SingleProcess()
}
