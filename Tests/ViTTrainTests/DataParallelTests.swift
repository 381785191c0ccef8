import Foundation
import ViTCore
import ViTDistributed
import ViTIO
import ViTModel
import XCTest
@testable import ViTTrain

/// The shard arithmetic and the gradient tree in one process; scripts/check_mpi.sh runs the same code under
/// mpirun against one process.
final class DataParallelTests: XCTestCase {
    func testShardsPartitionTheBatchAndFollowTheRanks() throws {
        let shards = try BatchShards(batchSize: 12, microBatchSize: nil, ranks: 2, field: "micro")
        XCTAssertEqual(shards.count, 4) // the default: four shards
        XCTAssertEqual((0..<4).map { shards.range($0, of: 12) }, [0..<3, 3..<6, 6..<9, 9..<12])
        XCTAssertEqual((0..<4).map { shards.range($0, of: 7) }.reduce(0) { $0 + $1.count }, 7) // a short last batch
        XCTAssertEqual(shards.owned(by: 1, of: 2), 2..<4)
        XCTAssertEqual(shards.images(of: 0, ranks: 2, in: 12), 0..<6)
        XCTAssertEqual(shards.images(of: 1, ranks: 2, in: 12), 6..<12)
        XCTAssertThrowsError(try BatchShards(batchSize: 12, microBatchSize: 5, ranks: 1, field: "micro")) { error in
            XCTAssertTrue("\(error)".contains("micro 5 must divide the batch size 12"), "\(error)")
        }
        XCTAssertEqual(try BatchShards(batchSize: 6, microBatchSize: nil, ranks: 2, field: "micro").count, 2)
        XCTAssertThrowsError(try BatchShards(batchSize: 8, microBatchSize: 1, ranks: 3, field: "micro")) { error in
            XCTAssertTrue("\(error)".contains("8 shards") && "\(error)".contains("3 ranks"), "\(error)")
        }
    }

    /// A rank's shards, cut from the samples it loaded: unreadable images leave their shard shorter.
    func testLocalShardsSkipUnreadableImages() throws {
        let shards = try BatchShards(batchSize: 8, microBatchSize: 2, ranks: 2, field: "micro")
        // Rank 1 asked for images 4..<8 of the batch; image 5 could not be read.
        let batch = LoadedBatch(samples: [0, 1, 2], labels: [0, 0, 0], skipped: ["5: bad"], positions: [4, 6, 7], requested: 8)
        XCTAssertEqual(shards.local(batch, rank: 1, ranks: 2), [0..<1, 1..<3])
    }

    /// Four shards' gradients sum as ((g0 + g1) + (g2 + g3)), the tree that two ranks of two shards each
    /// continue with one addition; three shards as (g0 + g1) + g2.
    func testGradientsSumAsABinaryTree() throws {
        let layer = NN.Linear(1, 1)
        layer.zeroGradients()
        let values: [Float] = [1e8, 1, -1e8, 1]
        for (count, expected) in [(4, (values[0] + values[1]) + (values[2] + values[3])), (3, (values[0] + values[1]) + values[2])] {
            let gradients = ShardedGradients(layer, communicator: SingleProcess()) { $0 == "weight" }
            gradients.begin(shards: count)
            for value in values.prefix(count) {
                layer.weightGradient = Tensor(shape: [1, 1], scalars: [value])
                gradients.endShard()
                XCTAssertEqual(layer.weightGradient!.scalars, [0], "taken out of the model after each shard")
            }
            gradients.finish()
            XCTAssertEqual(layer.weightGradient!.scalars, [expected])
        }
        XCTAssertNotEqual((values[0] + values[1]) + (values[2] + values[3]), ((values[0] + values[1]) + values[2]) + values[3]) // order matters
    }

    /// The fixture's MSN step cut into 4 shards (encoders shard by shard, heads and loss on the whole batch)
    /// gives the unsharded step's loss and gradients to float rounding.
    func testShardedStepMatchesTheWholeBatch() throws {
        let directory = TrainingFixtures.root.deletingLastPathComponent().appendingPathComponent("msn/sinkhorn_focal").path
        let views = try MSNViews(file: directory + "/views.safetensors")
        let settings = try MSNLossSettings(configPath: directory + "/msn_config.json")
        func step(shards: [Range<Int>]?) throws -> (MSNLossResult, [String: Tensor]) {
            let model = try MSNModel.load(directory: directory)
            model.zeroGradients()
            let gradients = shards.map { _ in ShardedGradients(model, communicator: SingleProcess()) { !$0.hasPrefix("fc.") && $0 != "prototypes" } }
            let result = try msnForwardBackward(model, targetEncoder: model.encoder, targetHead: model.head, views: views, settings: settings,
                                                shards: shards, gradients: gradients)
            gradients?.finish()
            var tensors: [String: Tensor] = [:]
            model.visitParameters { name, _, gradient in tensors[name] = gradient! }
            return (result, tensors)
        }
        let (whole, wholeGradients) = try step(shards: nil)
        let (sharded, shardedGradients) = try step(shards: [0..<1, 1..<2, 2..<3, 3..<4])
        XCTAssertEqual(sharded.loss, whole.loss, accuracy: 1e-5)
        XCTAssertLessThan(sharded.targets.maxAbsDifference(whole.targets), 1e-6)
        let scale = wholeGradients["prototypes"]!.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot()
        for (name, gradient) in wholeGradients {
            let other = shardedGradients[name]!
            if ["key.bias", "fc1.bias", "fc2.bias"].contains(where: name.hasSuffix) || name == "layernorm.bias" { // zero in exact arithmetic
                XCTAssertLessThan(other.scalars.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-5 * scale, name)
                continue
            }
            XCTAssertLessThan(other.relativeDifference(gradient), 1e-5, name)
        }
    }
}
