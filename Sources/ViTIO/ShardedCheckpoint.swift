import Foundation
import ViTCore

/// A model split over several files by an index (`model.safetensors.index.json` or
/// `pytorch_model.bin.index.json`, each with a `weight_map` from tensor to shard file).
public final class ShardedCheckpoint: TensorSource {
    public let indexPath: String
    private let shards: [String: TensorSource]
    private let shardOfTensor: [String: String]

    public var tensorNames: [String] { shardOfTensor.keys.sorted() }
    public var location: String { indexPath }

    public init(indexPath: String) throws {
        self.indexPath = indexPath
        guard let data = FileManager.default.contents(atPath: indexPath) else {
            throw CheckpointError(indexPath, "cannot read the shard index")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let weightMap = object["weight_map"] as? [String: Any]
        else { throw CheckpointError(indexPath, "not a shard index: expected a JSON object with a 'weight_map' object") }
        let directory = URL(fileURLWithPath: indexPath).deletingLastPathComponent()
        var shardOfTensor: [String: String] = [:]
        for (tensor, value) in weightMap {
            // A shard is a plain file name next to the index: never a path that could leave the model directory.
            guard let shard = value as? String, !shard.isEmpty, !shard.contains("/"), shard != "..", shard != "." else {
                throw CheckpointError(indexPath, "weight_map entry for '\(tensor)' is not a file name in the model directory")
            }
            shardOfTensor[tensor] = shard
        }
        var shards: [String: TensorSource] = [:]
        for shard in Set(shardOfTensor.values).sorted() {
            let shardPath = directory.appendingPathComponent(shard).path
            guard FileManager.default.fileExists(atPath: shardPath) else {
                throw CheckpointError(indexPath, "shard '\(shard)' is listed in the index but missing")
            }
            shards[shard] = shard.hasSuffix(".safetensors") ? try SafetensorsFile(path: shardPath) : try TorchCheckpoint(path: shardPath)
        }
        for (tensor, shard) in shardOfTensor where shards[shard]?.info(tensor) == nil {
            throw CheckpointError(indexPath, "tensor '\(tensor)' is mapped to '\(shard)', which does not contain it")
        }
        self.shards = shards
        self.shardOfTensor = shardOfTensor
    }

    public func info(_ name: String) -> TensorInfo? {
        shardOfTensor[name].flatMap { shards[$0]?.info(name) }
    }

    public func releaseResidentPages(_ name: String) {
        shardOfTensor[name].flatMap { shards[$0] }?.releaseResidentPages(name)
    }

    public func int8Values(_ name: String) throws -> [Int8] {
        guard let shard = shardOfTensor[name], let file = shards[shard] else { throw CheckpointError(indexPath, "no tensor named '\(name)'") }
        return try file.int8Values(name)
    }

    public func floatTensor(_ name: String) throws -> Tensor {
        guard let shard = shardOfTensor[name], let file = shards[shard] else {
            throw CheckpointError(indexPath, "no tensor named '\(name)'")
        }
        return try file.floatTensor(name)
    }
}
