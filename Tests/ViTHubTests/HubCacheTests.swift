import Foundation
import XCTest
@testable import ViTHub
import ViTModel

final class HubCacheTests: XCTestCase {
    /// A cache laid out as huggingface_hub lays it out, with the base fixture as the snapshot.
    func makeCache() throws -> (HubCache, commit: String) {
        let home = try temporaryDirectory()
        let cache = HubCache(environment: ["HF_HOME": home])
        let commit = String(repeating: "ab12", count: 10)
        let repository = cache.repositoryFolder("facebook/vit-msn-tiny")
        let snapshot = repository + "/snapshots/" + commit
        try FileManager.default.createDirectory(atPath: repository + "/refs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: repository + "/blobs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: snapshot, withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors"] { // snapshots hold symlinks into blobs/
            try FileManager.default.copyItem(atPath: Fixtures.model("base") + "/" + file, toPath: repository + "/blobs/" + file + ".blob")
            try FileManager.default.createSymbolicLink(atPath: snapshot + "/" + file, withDestinationPath: "../../blobs/" + file + ".blob")
        }
        try Data((commit + "\n").utf8).write(to: URL(fileURLWithPath: repository + "/refs/main"))
        return (cache, commit)
    }

    func testModelIdsResolveThroughRefsAndSnapshots() throws {
        let (cache, commit) = try makeCache()
        XCTAssertEqual(cache.root.hasSuffix("/hub"), true)
        let folder = try cache.resolve("facebook/vit-msn-tiny")
        XCTAssertTrue(folder.hasSuffix("/models--facebook--vit-msn-tiny/snapshots/" + commit))
        XCTAssertEqual(try cache.resolve("facebook/vit-msn-tiny", revision: commit), folder)
        let model = try ViTMSNModel.load(directory: folder)
        XCTAssertEqual(model.config.hiddenSize, 32)
        XCTAssertThrowsError(try cache.resolve("facebook/vit-msn-tiny", revision: "v2")) {
            XCTAssertTrue("\($0)".contains("not in the Hugging Face cache"), "\($0)")
        }
        XCTAssertThrowsError(try cache.resolve("facebook/vit-msn-huge")) {
            XCTAssertTrue("\($0)".contains("vitmsn download facebook/vit-msn-huge"), "\($0)")
        }
    }

    func testLocalPathsWinAndEnvironmentOrder() throws {
        let cache = HubCache(environment: ["HF_HUB_CACHE": "/x/hub-cache", "HF_HOME": "/y"])
        XCTAssertEqual(cache.root, "/x/hub-cache")
        XCTAssertEqual(HubCache(environment: ["HOME": "/home/u"]).root, "/home/u/.cache/huggingface/hub")
        XCTAssertEqual(try cache.resolve(Fixtures.model("base")), Fixtures.model("base"))
        XCTAssertThrowsError(try cache.resolve("./missing/dir/x")) { XCTAssertTrue("\($0)".contains("no such file")) }
        XCTAssertFalse(HubCache.isModelID("../etc"))
        // An id-shaped path under a local folder is a missing path, not an uncached model.
        let folder = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(URL(fileURLWithPath: folder).deletingLastPathComponent().path)
        defer { FileManager.default.changeCurrentDirectoryPath(previous) }
        let local = URL(fileURLWithPath: folder).lastPathComponent + "/nonexistent"
        XCTAssertThrowsError(try cache.resolve(local)) {
            XCTAssertTrue("\($0)".contains("no such file or directory (read as a path"), "\($0)")
        }
        XCTAssertTrue(HubCache.isModelID("facebook/vit-msn-small"))
    }
}

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    static func model(_ name: String) -> String { root.appendingPathComponent("models/\(name)").path }
}

func temporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vitmsn-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
