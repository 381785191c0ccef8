import ViTCore

/// Another source's tensors under new names, optionally as a block of rows (how a fused `qkv` weight is
/// split into query, key and value). Row blocks of a row-major tensor are contiguous: no copy is made.
public final class RenamedTensorSource: TensorSource {
    public struct Rule: Sendable {
        public let source: String
        public let rows: Range<Int>?
        public init(_ source: String, rows: Range<Int>? = nil) { (self.source, self.rows) = (source, rows) }
    }

    private let base: TensorSource
    public let rules: [String: Rule]
    public var location: String { base.location }
    public var tensorNames: [String] { rules.keys.sorted() }

    public init(_ base: TensorSource, rules: [String: Rule]) { (self.base, self.rules) = (base, rules) }

    public func info(_ name: String) -> TensorInfo? {
        guard let rule = rules[name], let info = base.info(rule.source) else { return nil }
        guard let rows = rule.rows else { return TensorInfo(name: name, dtype: info.dtype, shape: info.shape, dataRange: info.dataRange) }
        return TensorInfo(name: name, dtype: info.dtype, shape: [rows.count] + info.shape.dropFirst(), dataRange: info.dataRange)
    }

    public func floatTensor(_ name: String) throws -> Tensor {
        guard let rule = rules[name] else { throw CheckpointError(location, "no tensor named '\(name)'") }
        let whole = try base.floatTensor(rule.source)
        guard let rows = rule.rows else { return whole }
        guard let height = whole.shape.first, rows.upperBound <= height else {
            throw CheckpointError(location, "tensor '\(rule.source)' of shape \(whole.shape) has no rows \(rows)")
        }
        let width = whole.count / max(height, 1)
        let view = TensorStorage(borrowing: whole.storage.base + rows.lowerBound * width, count: rows.count * width, owner: whole.storage, fileMapped: whole.storage.isFileMapped)
        return Tensor(shape: [rows.count] + whole.shape.dropFirst(), storage: view)
    }
}
