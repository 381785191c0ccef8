#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Float32 memory behind a `Tensor`: either owned (allocated here) or borrowed from an owner that keeps it
/// alive, such as a memory-mapped checkpoint. Borrowed memory is never written: writers copy first.
public final class TensorStorage: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let count: Int
    public let isOwned: Bool
    /// Borrowed from a read-only private file mapping, whose pages can be dropped and read again.
    public let isFileMapped: Bool
    private let owner: AnyObject?
    /// Counts the writable accesses through `Tensor`, so that copies derived from the values (packed
    /// weights) can tell they are stale.
    public internal(set) var version = 0

    /// Zero-filled owned storage. `calloc` leaves large blocks as untouched zero pages, so placeholders that
    /// are replaced by mapped weights before use never become resident.
    public init(count: Int) {
        precondition(count >= 0, "negative element count")
        guard let memory = calloc(max(count, 1), MemoryLayout<Float>.stride) else { fatalError("out of memory for \(count) floats") }
        base = memory.assumingMemoryBound(to: Float.self)
        self.count = count
        isOwned = true
        isFileMapped = false
        owner = nil
    }

    /// Read-only storage that lives inside memory kept alive by `owner`, a read-only file mapping when
    /// `fileMapped`.
    public init(borrowing pointer: UnsafePointer<Float>, count: Int, owner: AnyObject, fileMapped: Bool = false) {
        base = UnsafeMutablePointer(mutating: pointer)
        self.count = count
        isOwned = false
        isFileMapped = fileMapped
        self.owner = owner
    }

    deinit {
        if isOwned { free(base) }
    }

    /// Gives the pages of file-mapped storage back to the kernel; they are read again from the file if
    /// touched. Other memory is left alone.
    public func releaseResidentPages() {
        guard isFileMapped, count > 0 else { return }
        releaseMappedPages(UnsafeRawBufferPointer(start: base, count: count * 4))
    }
}

/// Gives the whole pages inside `bytes` of a read-only file mapping back to the kernel (`MADV_DONTNEED`);
/// they are read again from the file if touched.
package func releaseMappedPages(_ bytes: UnsafeRawBufferPointer) {
    guard let base = bytes.baseAddress else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: base) + page - 1) / page * page, end = (Int(bitPattern: base) + bytes.count) / page * page
    guard end > start, let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(pointer, end - start, Int32(MADV_DONTNEED))
}

/// A dense, row-major Float32 tensor with value semantics (copy-on-write).
public struct Tensor: @unchecked Sendable {
    public private(set) var shape: [Int]
    public private(set) var storage: TensorStorage

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    public init(zeros shape: [Int]) {
        self.shape = shape
        storage = TensorStorage(count: Tensor.elementCount(shape))
    }

    public init(shape: [Int], scalars: [Float]) {
        precondition(Tensor.elementCount(shape) == scalars.count, "\(scalars.count) values for shape \(shape)")
        self.init(zeros: shape)
        scalars.withUnsafeBufferPointer { storage.base.update(from: $0.baseAddress!, count: scalars.count) }
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(zeros: shape)
        storage.base.update(repeating: value, count: count)
    }

    /// Wraps existing storage without copying (the element count must match the shape).
    public init(shape: [Int], storage: TensorStorage) {
        precondition(Tensor.elementCount(shape) == storage.count, "storage of \(storage.count) for shape \(shape)")
        self.shape = shape
        self.storage = storage
    }

    public static func elementCount(_ shape: [Int]) -> Int {
        shape.reduce(1) { precondition($1 >= 0, "negative dimension in \(shape)"); return $0 * $1 }
    }

    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.base, count: count)) }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.base, count: count))
    }

    /// Gives writable access, copying first if the storage is shared or borrowed.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if !(isKnownUniquelyReferenced(&storage) && storage.isOwned) {
            let copy = TensorStorage(count: count)
            copy.base.update(from: storage.base, count: count)
            storage = copy
        }
        storage.version &+= 1
        return try body(UnsafeMutableBufferPointer(start: storage.base, count: count))
    }

    /// The address of uniquely owned storage (copied first if shared or borrowed), for code that writes
    /// through it while the tensor stays where it is (a gradient held by its layer). Valid until the tensor
    /// is copied, replaced or freed.
    public mutating func uniqueBaseAddress() -> UnsafeMutablePointer<Float> {
        withUnsafeMutableBufferPointer { $0.baseAddress! }
    }

    /// Tensors of one shape stacked along a new first axis: (count, shape…).
    public static func stacked(_ tensors: [Tensor]) -> Tensor {
        precondition(!tensors.isEmpty && tensors.allSatisfy { $0.shape == tensors[0].shape }, "stacking needs tensors of one shape")
        let size = tensors[0].count
        var result = Tensor(zeros: [tensors.count] + tensors[0].shape)
        result.withUnsafeMutableBufferPointer { out in
            for (i, tensor) in tensors.enumerated() { (out.baseAddress! + i * size).update(from: tensor.storage.base, count: size) }
        }
        return result
    }

    /// The same values as `shape` (which must hold as many), sharing the storage until one is written.
    public func reshaped(_ shape: [Int]) -> Tensor { Tensor(shape: shape, storage: storage) }

    /// Rows `range` of the first axis, copied: (range.count, shape[1...]).
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0], "rows \(range) of \(shape)")
        let width = shape[0] == 0 ? 0 : count / shape[0]
        var result = Tensor(zeros: [range.count] + shape.dropFirst())
        result.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: storage.base + range.lowerBound * width, count: range.count * width) }
        return result
    }

    /// Tensors that agree past their first axis, joined along it.
    public static func concatenated(_ tensors: [Tensor]) -> Tensor {
        precondition(!tensors.isEmpty && tensors.allSatisfy { $0.shape.dropFirst() == tensors[0].shape.dropFirst() }, "concatenating needs tensors that agree past the first axis")
        var result = Tensor(zeros: [tensors.reduce(0) { $0 + $1.shape[0] }] + tensors[0].shape.dropFirst())
        result.withUnsafeMutableBufferPointer { out in
            var offset = 0
            for tensor in tensors {
                (out.baseAddress! + offset).update(from: tensor.storage.base, count: tensor.count)
                offset += tensor.count
            }
        }
        return result
    }

    /// ‖self − reference‖ / ‖reference‖ (L2 over all elements): the per-tensor error of gradient checks.
    public func relativeDifference(_ reference: Tensor) -> Float {
        precondition(count == reference.count, "comparing \(shape) with \(reference.shape)")
        var (difference, norm) = (0.0, 0.0)
        for i in 0..<count {
            let (a, b) = (Double(storage.base[i]), Double(reference.storage.base[i]))
            difference += (a - b) * (a - b)
            norm += b * b
        }
        return Float((difference / max(norm, 1e-30)).squareRoot())
    }

    /// Largest absolute elementwise difference; shapes must hold the same number of elements.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(count == other.count, "comparing \(shape) with \(other.shape)")
        var worst: Float = 0
        for i in 0..<count {
            let d = abs(storage.base[i] - other.storage.base[i])
            if d > worst || d.isNaN { worst = d.isNaN ? .nan : d }
            if worst.isNaN { return .nan }
        }
        return worst
    }
}
