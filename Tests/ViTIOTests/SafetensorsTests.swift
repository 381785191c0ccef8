import Foundation
import ViTCore
import XCTest
@testable import ViTIO

private func temporaryPath(_ name: String) throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-io-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory.appendingPathComponent(name).path
}

/// A safetensors file from a header given as JSON text and a data section.
private func rawFile(header: String, data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> String {
    try rawFile(headerBytes: Array(header.utf8), data: data, declaredLength: declaredLength)
}

private func rawFile(headerBytes: [UInt8], data: [UInt8] = [], declaredLength: UInt64? = nil) throws -> String {
    var bytes: [UInt8] = []
    withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) { bytes += $0 }
    bytes += headerBytes + data
    let path = try temporaryPath("raw.safetensors")
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

final class SafetensorsTests: XCTestCase {
    func testRoundTripOfEveryWrittenType() throws {
        let path = try temporaryPath("round.safetensors")
        let values: [Float] = [0, 1, -2.5, 3.140625, 65504, -1e-3]
        let tensor = Tensor(shape: [2, 3], scalars: values)
        try SafetensorsWriter.write([
            SafetensorsRecord(name: "f32", tensor: tensor),
            SafetensorsRecord(name: "f16", tensor: tensor, dtype: .F16),
            SafetensorsRecord(name: "bf16", tensor: tensor, dtype: .BF16),
            SafetensorsRecord(name: "ids", int64: [3, -100, 7], shape: [3]),
            SafetensorsRecord(name: "mask", bool: [true, false], shape: [1, 2]),
            SafetensorsRecord(name: "scalar", tensor: Tensor(shape: [], scalars: [4])),
        ], to: path)
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(try file.floatTensor("f32").scalars, values)
        XCTAssertEqual(try file.floatTensor("f16").scalars, values.map { Float(Float16($0)) })
        let bf16 = try file.floatTensor("bf16").scalars
        for (a, b) in zip(bf16, values) { XCTAssertEqual(a, b, accuracy: abs(b) / 128) }
        XCTAssertEqual(try file.integerValues("ids"), [3, -100, 7])
        XCTAssertEqual(try file.integerValues("mask"), [1, 0])
        XCTAssertEqual(try file.floatTensor("scalar").shape, [])
        XCTAssertEqual(try file.floatTensor("scalar").scalars, [4])
        XCTAssertThrowsError(try file.integerValues("f32"))
        XCTAssertThrowsError(try file.floatTensor("nope")) { XCTAssertTrue("\($0)".contains("no tensor named 'nope'")) }
    }

    /// A FIFO in a checkpoint's place is refused at once (opening it to read would wait for a writer forever).
    func testAFIFOIsRefusedWithoutWaiting() throws {
        let path = try temporaryPath("model.safetensors")
        XCTAssertEqual(mkfifo(path, 0o600), 0)
        let answered = DispatchSemaphore(value: 0)
        let outcome = UncheckedResult()
        Thread {
            do { _ = try SafetensorsFile(path: path); outcome.message = "opened" } catch { outcome.message = "\(error)" }
            answered.signal()
        }.start()
        XCTAssertEqual(answered.wait(timeout: .now() + 10), .success, "opening a FIFO blocked")
        XCTAssertTrue(outcome.message.contains("not a regular file") && outcome.message.contains(path), outcome.message)
    }

    private final class UncheckedResult: @unchecked Sendable { var message = "" } // written before the signal, read after

    func testBF16RoundsToNearestEven() {
        XCTAssertEqual(HalfPrecision.bf16Bits(from: Float(bitPattern: 0x3F80_8000)), 0x3F80) // tie, even stays
        XCTAssertEqual(HalfPrecision.bf16Bits(from: Float(bitPattern: 0x3F81_8000)), 0x3F82) // tie, odd rounds up
        XCTAssertEqual(HalfPrecision.bf16Bits(from: Float(bitPattern: 0x3F80_8001)), 0x3F81)
        XCTAssertEqual(HalfPrecision.bf16Bits(from: .nan) & 0x7FC0, 0x7FC0)
    }

    /// Each way a header can be wrong gives an error that says what is wrong.
    func testMalformedFilesAreRejectedWithAReason() throws {
        let four: [UInt8] = [0, 0, 128, 63]
        let cases: [(path: String, reason: String)] = [
            (try rawFile(header: ""), "header must be UTF-8 JSON starting with '{' (found byte none)"),
            (try rawFile(headerBytes: [0xEF, 0xBB, 0xBF] + Array("{}".utf8)), "starting with '{' (found byte 0xef)"),  // a byte-order mark
            (try rawFile(headerBytes: [0xFF, 0xFE] + "{}".utf16.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }), "starting with '{'"),  // UTF-16
            (try rawFile(headerBytes: Array("{\"a\": \"".utf8) + [0xC3, 0x28] + Array("\"}".utf8)), "UTF-8"),
            (try { let p = try temporaryPath("short"); try Data([1, 2, 3]).write(to: URL(fileURLWithPath: p)); return p }(), "too short"),
            (try rawFile(header: "{}", declaredLength: 1_000), "runs past the end"),
            (try rawFile(header: "{}", declaredLength: UInt64.max), "exceeds"),
            (try rawFile(header: "{\"a\": "), "not valid JSON"),
            (try rawFile(header: "[1, 2]"), "starting with '{'"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}"#, data: four), "beyond"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, data: four), "needs 8"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#, data: four), "ordered range"),
            (try rawFile(header: #"{"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 4]}}"#, data: four), "unsupported dtype 'Q4'"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, data: four), "non-negative"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, data: four), "non-negative"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#, data: four), "two integers"),
            (try rawFile(header: #"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 4]}}"#, data: four), "too large"),
            (try rawFile(header: #"{"a": {"shape": [1], "data_offsets": [0, 4]}}"#, data: four), "missing dtype"),
            (try rawFile(header: #"{"a": 3}"#), "not an object"),
            (try rawFile(header: #"{"__metadata__": {"format": 1}}"#), "must be strings"),
            (try rawFile(
                header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#,
                data: four + four), "overlap"),
        ]
        for (path, reason) in cases {
            XCTAssertThrowsError(try SafetensorsFile(path: path), reason) { error in
                XCTAssertTrue("\(error)".contains(reason), "expected '\(reason)' in: \(error)")
                XCTAssertTrue("\(error)".hasPrefix(path), "the message names the file: \(error)")
            }
        }
        XCTAssertThrowsError(try SafetensorsFile(path: "/nonexistent/model.safetensors")) {
            XCTAssertTrue("\($0)".contains("cannot open"), "\($0)")
        }
    }

    func testUnalignedFloat32IsCopiedNotBorrowed() throws {
        // A 1-byte tensor first puts the F32 one at an odd offset.
        let header = #"{"b": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "f": {"dtype": "F32", "shape": [1], "data_offsets": [1, 5]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        let file = try SafetensorsFile(path: rawFile(header: padded, data: [7, 0, 0, 128, 63]))
        let tensor = try file.floatTensor("f")
        XCTAssertEqual(tensor.scalars, [1])
        XCTAssertTrue(tensor.storage.isOwned)
    }

    /// Flips and truncates bytes of a valid file thousands of times: every load either succeeds or throws, and a
    /// file that opens can have every tensor read without leaving the mapping.
    func testMutatedFilesLoadOrThrowButNeverCrash() throws {
        let path = try temporaryPath("valid.safetensors")
        var generator = SeededGenerator(seed: 7)
        try SafetensorsWriter.write([
            SafetensorsRecord(name: "w", tensor: Tensor(shape: [4, 3], scalars: (0..<12).map(Float.init))),
            SafetensorsRecord(name: "h", tensor: Tensor(shape: [5], scalars: [1, 2, 3, 4, 5]), dtype: .BF16),
            SafetensorsRecord(name: "i", int64: [1, 2], shape: [2]),
        ], to: path)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let mutated = try temporaryPath("mutated.safetensors")
        var (opened, rejected) = (0, 0)
        for trial in 0..<3000 {
            var bytes = original
            if trial % 3 == 0 {
                bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &generator)))
            } else {
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    // Bias flips towards the header, where the structure is.
                    let limit = Bool.random(using: &generator) ? min(bytes.count, 200) : bytes.count
                    bytes[Int.random(in: 0..<limit, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
                }
            }
            try Data(bytes).write(to: URL(fileURLWithPath: mutated))
            do {
                let file = try SafetensorsFile(path: mutated)
                for name in file.tensorNames {
                    _ = try file.floatTensor(name).scalars
                    if file.info(name).map({ !$0.dtype.isFloatingPoint }) ?? false { _ = try file.integerValues(name) }
                }
                opened += 1
            } catch is CheckpointError {
                rejected += 1
            }
        }
        XCTAssertEqual(opened + rejected, 3000)
        XCTAssertGreaterThan(rejected, 1000)
        XCTAssertGreaterThan(opened, 50, "flips in the data section leave a valid file")
    }

    func testAWriteReplacesTheFileAtomically() throws {
        let path = try temporaryPath("atomic.safetensors")
        try SafetensorsWriter.write([SafetensorsRecord(name: "a", tensor: Tensor(shape: [1], scalars: [1]))], to: path)
        try SafetensorsWriter.write([SafetensorsRecord(name: "b", tensor: Tensor(shape: [1], scalars: [2]))], to: path)
        XCTAssertEqual(try SafetensorsFile(path: path).tensorNames, ["b"])
        let siblings = try FileManager.default.contentsOfDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path)
        XCTAssertEqual(siblings, ["atomic.safetensors"], "no temporary file is left behind")
        XCTAssertThrowsError(try SafetensorsWriter.write([], to: "/nonexistent-dir/x.safetensors")) {
            XCTAssertTrue("\($0)".contains("cannot write"), "\($0)")
        }
    }
}

final class ShardedCheckpointTests: XCTestCase {
    func makeShards(weightMap: String, shards: [String: [SafetensorsRecord]]) throws -> String {
        let directory = URL(fileURLWithPath: try temporaryPath("x")).deletingLastPathComponent().path
        for (name, records) in shards { try SafetensorsWriter.write(records, to: directory + "/" + name) }
        let index = directory + "/model.safetensors.index.json"
        try Data(#"{"metadata": {}, "weight_map": \#(weightMap)}"#.utf8).write(to: URL(fileURLWithPath: index))
        return index
    }

    func testShardsAreResolvedAndChecked() throws {
        let a = SafetensorsRecord(name: "a", tensor: Tensor(shape: [1], scalars: [1]))
        let b = SafetensorsRecord(name: "b", tensor: Tensor(shape: [1], scalars: [2]))
        let good = try ShardedCheckpoint(indexPath: makeShards(
            weightMap: #"{"a": "one.safetensors", "b": "two.safetensors"}"#,
            shards: ["one.safetensors": [a], "two.safetensors": [b]]))
        XCTAssertEqual(good.tensorNames, ["a", "b"])
        XCTAssertEqual(try good.floatTensor("b").scalars, [2])

        let failures: [(String, [String: [SafetensorsRecord]], String)] = [
            (#"{"a": "one.safetensors", "b": "gone.safetensors"}"#, ["one.safetensors": [a]], "shard 'gone.safetensors' is listed in the index but missing"),
            (#"{"a": "../one.safetensors"}"#, [:], "not a file name in the model directory"),
            (#"{"b": "one.safetensors"}"#, ["one.safetensors": [a]], "does not contain it"),
            (#"[]"#, [:], "weight_map"),
        ]
        for (map, shards, reason) in failures {
            XCTAssertThrowsError(try ShardedCheckpoint(indexPath: makeShards(weightMap: map, shards: shards))) { error in
                XCTAssertTrue("\(error)".contains(reason), "expected '\(reason)' in: \(error)")
            }
        }
    }
}
