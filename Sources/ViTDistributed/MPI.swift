import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An MPI job, through Open MPI's `libmpi` opened at run time (`VITMSN_LIBMPI`, else `libmpi.so.40` or
/// `libmpi.so`): the package builds and runs without MPI, and nothing is linked. Open MPI's ABI (handles are
/// pointers to its predefined globals) is what this speaks; MPICH's differs.
///
/// Every MPI call runs on one serial communication queue (`MPI_THREAD_SERIALIZED`), so gradient buckets can
/// be reduced while the caller computes. The reductions are this file's own (recursive halving-doubling, or
/// a ring for other sizes, over non-blocking point-to-point messages): bandwidth-optimal like
/// MPI_Allreduce's, but the order of every sum is fixed by the job's size, which MPI_Allreduce does not
/// promise; and each wait has a deadline, so a dead or hung rank ends the job instead of hanging it.
public final class MPICommunicator: Communicator, @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Seconds any one wait for a peer may last before the job is aborted.
    public let collectiveTimeout: Double
    private let api: API
    private let queue = DispatchQueue(label: "vitmsn.mpi")

    public init(collectiveTimeout: Double = 120) throws {
        self.collectiveTimeout = collectiveTimeout
        api = try API.load()
        var provided: Int32 = 0
        guard api.initThread(nil, nil, 2 /* MPI_THREAD_SERIALIZED */, &provided) == 0 else { throw DistributedError("MPI_Init_thread failed") }
        guard provided >= 2 else { throw DistributedError("this MPI provides thread level \(provided), MPI_THREAD_SERIALIZED (2) is needed") }
        var value: Int32 = 0
        _ = api.commRank(api.world, &value)
        rank = Int(value)
        _ = api.commSize(api.world, &value)
        size = Int(value)
    }

    /// MPI_Finalize, after the communication queue's work: the last call of a job that ends well.
    public func finish() { queue.sync { _ = api.finalize() } }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>, label: String) {
        let box = UncheckedBox(values)
        queue.sync { reduce(box.value, datatype: api.float, label: label) }
    }

    public func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>, label: String) {
        let box = UncheckedBox(values)
        queue.sync { reduce(box.value, datatype: api.double, label: label) }
    }

    public func startAllReduceSum(_ values: [Float], label: String) -> PendingReduction {
        let pending = PendingReduction(values)
        queue.async { pending.run { self.reduce($0, datatype: self.api.float, label: label) } }
        return pending
    }

    public func abort(_ message: String) -> Never {
        FileHandle.standardError.write(Data(("vitmsn: " + message + "\n").utf8))
        _ = api.abort(api.world, 1)
        exit(1)
    }

    /// The job's all-reduce: recursive halving then doubling when the size is a power of two, else the ring.
    private func reduce<T: FloatingPoint>(_ values: UnsafeMutableBufferPointer<T>, datatype: OpaquePointer, label: String) {
        if size & (size - 1) == 0 { halvingDoubling(values, datatype: datatype, label: label) } else { ring(values, datatype: datatype, label: label) }
    }

    /// Recursive halving (reduce-scatter) then doubling (all-gather): in step k rank r and rank r ^ 2^k swap
    /// halves of their current segment and add, so every element is summed as a balanced binary tree over the
    /// ranks, pairs (0, 1), (2, 3) first. Addition being commutative, a tree is the same bits whichever rank
    /// adds; and a tree of contiguous shards summed locally first gives exactly the one-process sum.
    private func halvingDoubling<T: FloatingPoint>(_ values: UnsafeMutableBufferPointer<T>, datatype: OpaquePointer, label: String) {
        guard size > 1, !values.isEmpty else { return }
        let base = values.baseAddress!
        let scratch = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count / 2 + 1)
        defer { scratch.deallocate() }
        var segments: [(Range<Int>, Range<Int>)] = [] // per step: (kept, given away)
        var segment = 0..<values.count
        var distance = 1
        while distance < size {
            let partner = rank ^ distance
            let middle = segment.lowerBound + segment.count / 2
            let (lower, upper) = (segment.lowerBound..<middle, middle..<segment.upperBound)
            let (kept, given) = rank & distance == 0 ? (lower, upper) : (upper, lower)
            exchange(send: base + given.lowerBound, sendCount: given.count, to: partner, receive: scratch.baseAddress!, receiveCount: kept.count, from: partner,
                     datatype: datatype, label: label)
            for (i, j) in kept.enumerated() { base[j] = base[j] + scratch[i] }
            segments.append((kept, given))
            segment = kept
            distance <<= 1
        }
        for (kept, given) in segments.reversed() {
            distance >>= 1
            let partner = rank ^ distance
            exchange(send: base + kept.lowerBound, sendCount: kept.count, to: partner, receive: base + given.lowerBound, receiveCount: given.count, from: partner,
                     datatype: datatype, label: label)
        }
    }

    /// Ring all-reduce: in step s of the reduce-scatter, rank r sends chunk r − s to rank r + 1 and adds chunk
    /// r − s − 1 from rank r − 1 into its own, so chunk c is summed in ring order c, c + 1, …; after N − 1
    /// steps rank r holds the whole sum of chunk r + 1, and N − 1 all-gather steps pass the sums round.
    private func ring<T: FloatingPoint>(_ values: UnsafeMutableBufferPointer<T>, datatype: OpaquePointer, label: String) {
        let n = size
        guard n > 1, !values.isEmpty else { return }
        let (right, left) = ((rank + 1) % n, (rank + n - 1) % n)
        func chunk(_ c: Int) -> Range<Int> { let c = (c % n + n) % n; return (c * values.count / n)..<((c + 1) * values.count / n) }
        let scratch = UnsafeMutableBufferPointer<T>.allocate(capacity: values.count / n + 1)
        defer { scratch.deallocate() }
        let base = values.baseAddress!
        for s in 0..<(n - 1) {
            let (outgoing, incoming) = (chunk(rank - s), chunk(rank - s - 1))
            exchange(send: base + outgoing.lowerBound, sendCount: outgoing.count, to: right, receive: scratch.baseAddress!, receiveCount: incoming.count, from: left,
                     datatype: datatype, label: label)
            for (i, j) in incoming.enumerated() { base[j] = base[j] + scratch[i] }
        }
        for s in 0..<(n - 1) {
            let (outgoing, incoming) = (chunk(rank + 1 - s), chunk(rank - s))
            exchange(send: base + outgoing.lowerBound, sendCount: outgoing.count, to: right, receive: base + incoming.lowerBound, receiveCount: incoming.count, from: left,
                     datatype: datatype, label: label)
        }
    }

    /// Sends to `right` and receives from `left` at once, polling both until done or the deadline passes.
    private func exchange<T>(send: UnsafeMutablePointer<T>, sendCount: Int, to right: Int, receive: UnsafeMutablePointer<T>, receiveCount: Int, from left: Int,
                             datatype: OpaquePointer, label: String) {
        var requests: [OpaquePointer?] = [nil, nil]
        let tag: Int32 = 7
        guard api.isend(send, Int32(sendCount), datatype, Int32(right), tag, api.world, &requests[0]) == 0,
              api.irecv(receive, Int32(receiveCount), datatype, Int32(left), tag, api.world, &requests[1]) == 0 else {
            abort("rank \(rank): MPI could not post the messages of \(label)")
        }
        let start = DispatchTime.now().uptimeNanoseconds
        var polls = 0
        var flags: [Int32] = [0, 0]
        while true {
            for i in 0..<2 where flags[i] == 0 { _ = api.test(&requests[i], &flags[i], nil) }
            if flags[0] != 0 && flags[1] != 0 { return }
            polls += 1
            // Spin briefly (a peer usually answers within microseconds), then yield the core to the compute
            // threads of this machine's other ranks.
            if polls > 2_000 { usleep(polls > 200_000 ? 500 : 20) }
            let waited = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if waited > collectiveTimeout {
                let peer = flags[1] == 0 ? left : right
                abort(String(format: "rank %d waited %.0f s for rank %d in %@: rank %d is dead or hung (or itself waits on another); ending the job",
                             rank, waited, peer, label, peer))
            }
        }
    }

    /// The handful of Open MPI symbols used.
    private struct API {
        typealias InitThread = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>) -> Int32
        typealias CommQuery = @convention(c) (OpaquePointer, UnsafeMutablePointer<Int32>) -> Int32
        typealias Isend = @convention(c) (UnsafeRawPointer, Int32, OpaquePointer, Int32, Int32, OpaquePointer, UnsafeMutablePointer<OpaquePointer?>) -> Int32
        typealias Irecv = @convention(c) (UnsafeMutableRawPointer, Int32, OpaquePointer, Int32, Int32, OpaquePointer, UnsafeMutablePointer<OpaquePointer?>) -> Int32
        typealias Test = @convention(c) (UnsafeMutablePointer<OpaquePointer?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
        typealias Abort = @convention(c) (OpaquePointer, Int32) -> Int32
        typealias Finalize = @convention(c) () -> Int32

        let initThread: InitThread, commRank: CommQuery, commSize: CommQuery
        let isend: Isend, irecv: Irecv, test: Test, abort: Abort, finalize: Finalize
        let world, float, double: OpaquePointer

        static func load() throws -> API {
            let environment = ProcessInfo.processInfo.environment
            let candidates = environment["VITMSN_LIBMPI"].map { [$0] } ?? ["libmpi.so.40", "libmpi.so", "libmpi.dylib"]
            // RTLD_GLOBAL: Open MPI's plug-ins resolve libmpi's symbols through the global namespace.
            guard let library = candidates.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_GLOBAL) }).first else {
                throw DistributedError("started by an MPI launcher, but no Open MPI library loads (tried \(candidates.joined(separator: ", ")); install openmpi-bin, or set VITMSN_LIBMPI)")
            }
            func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
                guard let address = dlsym(library, name) else { throw DistributedError("the MPI library has no '\(name)': Open MPI is needed") }
                return address
            }
            func function<F>(_ name: String, _ type: F.Type) throws -> F { unsafeBitCast(try symbol(name), to: type) }
            return API(
                initThread: try function("MPI_Init_thread", InitThread.self),
                commRank: try function("MPI_Comm_rank", CommQuery.self), commSize: try function("MPI_Comm_size", CommQuery.self),
                isend: try function("MPI_Isend", Isend.self), irecv: try function("MPI_Irecv", Irecv.self), test: try function("MPI_Test", Test.self),
                abort: try function("MPI_Abort", Abort.self), finalize: try function("MPI_Finalize", Finalize.self),
                world: OpaquePointer(try symbol("ompi_mpi_comm_world")),
                float: OpaquePointer(try symbol("ompi_mpi_float")), double: OpaquePointer(try symbol("ompi_mpi_double")))
        }
    }
}

public struct DistributedError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Moves a buffer pointer into the communication queue's closure; the caller waits for it (`sync`).
private struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
