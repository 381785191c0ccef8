import Foundation
import ViTCore
import CZlib
import XCTest
@testable import ViTIO

/// Tests/Fixtures/torch and the .bin model fixtures, written by scripts/make_fixtures.py with torch.save.
private func fixture(_ path: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/\(path)").path
}

/// A stored (uncompressed) zip of `entries`, as torch.save lays one out.
private func storedZip(_ entries: [(name: String, data: [UInt8])]) -> [UInt8] {
    func le(_ value: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8((value >> (8 * $0)) & 0xFF) } }
    var (body, directory) = ([UInt8](), [UInt8]())
    for entry in entries {
        let crc = entry.data.withUnsafeBufferPointer { Int(crc32(0, $0.baseAddress, UInt32($0.count))) }
        let fields = le(0, 2) + le(0, 2) + le(0, 4) + le(crc, 4) + le(entry.data.count, 4) + le(entry.data.count, 4) + le(entry.name.utf8.count, 2) + le(0, 2)
        directory += [0x50, 0x4B, 0x01, 0x02] + le(20, 2) + le(20, 2) + fields + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(body.count, 4) + Array(entry.name.utf8)
        body += [0x50, 0x4B, 0x03, 0x04] + le(20, 2) + fields + Array(entry.name.utf8) + entry.data
    }
    return body + directory + [0x50, 0x4B, 0x05, 0x06] + le(0, 4) + le(entries.count, 2) + le(entries.count, 2) + le(directory.count, 4) + le(body.count, 4) + le(0, 2)
}

private func writeTemporary(_ bytes: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-torch-\(UUID().uuidString).bin").path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

final class TorchCheckpointTests: XCTestCase {
    func testValidCheckpointIsReadInPlace() throws {
        let checkpoint = try TorchCheckpoint(path: fixture("torch/valid.bin"))
        XCTAssertEqual(checkpoint.tensorNames, ["w"])
        let w = try checkpoint.floatTensor("w")
        XCTAssertEqual(w.scalars, [0, 1, 2, 3, 4, 5])
        XCTAssertFalse(w.storage.isOwned, "contiguous aligned F32 is borrowed from the mapped file")
        XCTAssertEqual(checkpoint.info("w")?.dtype, .F32)
    }

    func testStateDictNamesAndDtypes() throws {
        let bin = try TorchCheckpoint(path: fixture("models/base_f16_bin/pytorch_model.bin"))
        let reference = try SafetensorsFile(path: fixture("models/base_f16/model.safetensors"))
        XCTAssertEqual(bin.tensorNames, reference.tensorNames)
        for name in bin.tensorNames {
            XCTAssertEqual(bin.info(name)?.dtype, .F16, name)
            XCTAssertEqual(try bin.floatTensor(name).scalars, try reference.floatTensor(name).scalars, name)
        }
    }

    func testHostileFilesAreRefusedWithTheReason() throws {
        let refusedOnOpen: [(String, String)] = [
            ("torch/forbidden_global.bin", "refusing global 'posix.system'"),
            ("torch/recursion_bomb.bin", "nested deeper than 64 levels"),
            ("torch/unknown_opcode.bin", "opcode 0x69"),
            ("torch/legacy.bin", "legacy torch.save format of PyTorch < 1.6; re-save it"),
        ]
        for (file, reason) in refusedOnOpen {
            XCTAssertThrowsError(try TorchCheckpoint(path: fixture(file)), file) { error in
                XCTAssertTrue("\(error)".contains(reason), "expected '\(reason)' in \(error)")
                XCTAssertTrue("\(error)".hasPrefix(fixture(file)), "names the file: \(error)")
            }
        }
        let short = try TorchCheckpoint(path: fixture("torch/short_storage.bin"))
        XCTAssertThrowsError(try short.floatTensor("w")) { XCTAssertTrue("\($0)".contains("fewer than its 6 F32 elements"), "\($0)") }
    }

    func testTruncatedAndCorruptArchives() throws {
        let valid = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixture("torch/valid.bin"))))
        XCTAssertThrowsError(try TorchCheckpoint(path: writeTemporary(Array(valid.prefix(valid.count / 2))))) {
            XCTAssertTrue("\($0)".contains("end-of-central-directory"), "\($0)")
        }
        // Flip one byte of the tensor data: the CRC check catches it when the tensor is read.
        let checkpoint = try TorchCheckpoint(path: fixture("torch/valid.bin"))
        let dataStart = try XCTUnwrap(checkpoint.info("w")).dataRange.lowerBound
        var flipped = valid
        flipped[dataStart + 5] ^= 0x40
        let corrupt = try TorchCheckpoint(path: writeTemporary(flipped))
        XCTAssertThrowsError(try corrupt.floatTensor("w")) { XCTAssertTrue("\($0)".contains("CRC-32"), "\($0)") }
        XCTAssertThrowsError(try TorchCheckpoint(path: writeTemporary(Array("PK\u{3}\u{4}nonsense".utf8)))) {
            XCTAssertTrue("\($0)".contains("zip"), "\($0)")
        }
        XCTAssertThrowsError(try TorchCheckpoint(path: writeTemporary(Array("hello".utf8)))) {
            XCTAssertTrue("\($0)".contains("not a PyTorch checkpoint"), "\($0)")
        }
    }

    /// The valid archive with its end record saturated (0xFFFF entries, 0xFFFFFFFF size and offset) and a
    /// zip64 record + locator carrying the real values, as writers of large checkpoints produce.
    func testZip64EndRecordsAreFollowed() throws {
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixture("torch/valid.bin"))))
        let end = try XCTUnwrap((0...(bytes.count - 22)).reversed().first { bytes[$0] == 0x50 && bytes[$0 + 1] == 0x4B && bytes[$0 + 2] == 5 && bytes[$0 + 3] == 6 })
        func read(_ at: Int, _ n: Int) -> UInt64 { (0..<n).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) } }
        func le(_ value: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8((value >> (8 * UInt64($0))) & 0xFF) } }
        let (count, size, offset) = (read(end + 10, 2), read(end + 12, 4), read(end + 16, 4))
        let zip64Record = [0x50, 0x4B, 0x06, 0x06] + le(44, 8) + le(45, 2) + le(45, 2) + le(0, 4) + le(0, 4)
            + le(count, 8) + le(count, 8) + le(size, 8) + le(offset, 8)
        let locator = [0x50, 0x4B, 0x06, 0x07] + le(0, 4) + le(UInt64(end), 8) + le(1, 4)
        var classic = Array(bytes[end..<(end + 22)])
        classic.replaceSubrange(8..<20, with: le(0xFFFF, 2) + le(0xFFFF, 2) + le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4))
        bytes = Array(bytes[..<end]) + zip64Record + locator + classic
        let checkpoint = try TorchCheckpoint(path: writeTemporary(bytes))
        XCTAssertEqual(try checkpoint.floatTensor("w").scalars, [0, 1, 2, 3, 4, 5])
    }

    /// 50,000 levels of nesting (tuples, lists, dict keys), refused or thrown away wherever the unpickler
    /// leaves them: freeing them must not overflow the stack.
    func testDeeplyNestedPicklesAreFreedWithoutRecursion() throws {
        let deepTuple = [UInt8]("N".utf8) + [UInt8](repeating: 0x85, count: 50_000)  // TUPLE1 after TUPLE1
        let deepList = [UInt8](repeating: 0x5D, count: 50_000) + [UInt8](repeating: 0x61, count: 49_999)  // [[[…]]]
        let refused: [[UInt8]] = [deepTuple, deepList]
        let discarded: [[UInt8]] = [
            Array("ccollections\nOrderedDict\n".utf8) + deepTuple + [0x85, 0x52],  // OrderedDict(deep) ignores its argument
            deepTuple + [0x71, 0x00, 0x7D],  // memoised and left on the stack under the result, {}
        ]
        for (pickle, isRefused) in refused.map({ ($0, true) }) + discarded.map({ ($0, false) }) {
            let path = try writeTemporary(storedZip([("archive/data.pkl", [0x80, 0x02] + pickle + [0x2E])]))
            if isRefused {
                XCTAssertThrowsError(try TorchCheckpoint(path: path)) { XCTAssertTrue("\($0)".contains("nested deeper than 64"), "\($0)") }
            } else {
                XCTAssertEqual(try TorchCheckpoint(path: path).tensorNames, [])
            }
        }
    }

    /// A storage of 2^62 elements, a stride or offset near Int.max, a shape of 2^40 × 2^40: errors, not traps.
    func testHostileNumbersInThePickleAreRefused() throws {
        for (file, reason) in [("huge_storage", "claims 4611686018427387904 elements"), ("huge_stride", "beyond any storage"),
                               ("huge_offset", "beyond any storage"), ("huge_shape", "beyond any storage")] {
            let path = fixture("torch/\(file).bin")
            XCTAssertThrowsError(try TorchCheckpoint(path: path).floatTensor("w"), file) { error in
                XCTAssertTrue("\(error)".contains(reason) && "\(error)".contains(path), "\(error)")
            }
        }
    }

    /// A second central-directory record for an entry (the last would win), and a zip64 locator whose offset
    /// is near Int.max (a bounds check that adds to it would overflow): errors naming the zip, not a trap.
    func testDuplicateEntriesAndHugeOffsetsAreRefused() throws {
        let valid = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixture("torch/valid.bin"))))
        let end = try XCTUnwrap((0...(valid.count - 22)).reversed().first { valid[$0] == 0x50 && valid[$0 + 1] == 0x4B && valid[$0 + 2] == 5 && valid[$0 + 3] == 6 })
        func read(_ at: Int, _ n: Int) -> Int { (0..<n).reduce(0) { $0 | Int(valid[at + $1]) << (8 * $1) } }
        func le(_ value: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8((value >> (8 * UInt64($0))) & 0xFF) } }
        let (count, size, start) = (read(end + 10, 2), read(end + 12, 4), read(end + 16, 4))
        let first = Array(valid[start..<(start + 46 + read(start + 28, 2) + read(start + 30, 2) + read(start + 32, 2))])
        var duplicated = Array(valid[..<(start + size)]) + first + Array(valid[(start + size)...])  // zip64 records may follow the directory
        duplicated.replaceSubrange((end + first.count + 8)..<(end + first.count + 16), with: le(UInt64(count + 1), 2) + le(UInt64(count + 1), 2) + le(UInt64(size + first.count), 4))
        XCTAssertThrowsError(try TorchCheckpoint(path: writeTemporary(duplicated))) {
            XCTAssertTrue("\($0)".contains("two entries are named 'archive/"), "\($0)")
        }
        var saturated = Array(valid[end..<(end + 22)])
        saturated.replaceSubrange(8..<20, with: le(0xFFFF, 2) + le(0xFFFF, 2) + le(0xFFFF_FFFF, 4) + le(0xFFFF_FFFF, 4))
        let locator = [0x50, 0x4B, 0x06, 0x07] + le(0, 4) + le(UInt64(Int.max - 3), 8) + le(1, 4)
        XCTAssertThrowsError(try TorchCheckpoint(path: writeTemporary(Array(valid[..<end]) + locator + saturated))) {
            XCTAssertTrue("\($0)".contains("zip: record at"), "\($0)")
        }
    }

    /// Thousands of truncations and byte flips of real .bin files: every load and every tensor read either
    /// succeeds or throws CheckpointError.
    func testMutatedCheckpointsLoadOrThrow() throws {
        var generator = SeededGenerator(seed: 11)
        var (loaded, rejected) = (0, 0)
        for file in ["torch/valid.bin", "models/classifier_bin/pytorch_model.bin"] {
            let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixture(file))))
            let path = try writeTemporary(original)
            for trial in 0..<1500 {
                var bytes = original
                if trial % 3 == 0 {
                    bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
                } else {
                    for _ in 0..<Int.random(in: 1...4, using: &generator) {
                        bytes[Int.random(in: 0..<bytes.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
                    }
                }
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                do {
                    let checkpoint = try TorchCheckpoint(path: path)
                    for name in checkpoint.tensorNames { _ = try checkpoint.floatTensor(name) }
                    loaded += 1
                } catch is CheckpointError {
                    rejected += 1
                }
            }
        }
        XCTAssertEqual(loaded + rejected, 3000)
        XCTAssertGreaterThan(rejected, 1500)
    }
}
