import Foundation
import XCTest
@testable import ViTHub
import ViTModel

/// `vitmsn download` against scripts/fake_hub.py on 127.0.0.1, serving a fixture model as the Hub would.
final class HubDownloadTests: XCTestCase {
    final class FakeHub {
        let process = Process()
        let input = Pipe()
        let port: Int

        init(serving model: String, arguments: [String] = []) throws {
            let script = Fixtures.root.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts/fake_hub.py").path
            let output = Pipe()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", script, "--root", Fixtures.model(model), "--repo", "facebook/vit-msn-tiny", "--seconds", "60"] + arguments
            process.standardInput = input
            process.standardOutput = output
            try process.run()
            let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            port = try XCTUnwrap(Int(line.trimmingCharacters(in: .whitespacesAndNewlines)), "fake hub printed '\(line)'")
        }

        func environment(_ home: String, _ extra: [String: String] = [:]) -> [String: String] {
            ["HF_HOME": home, "HF_ENDPOINT": "http://127.0.0.1:\(port)"].merging(extra) { $1 }
        }

        deinit {
            try? input.fileHandleForWriting.close() // the server stops when its stdin closes
            process.waitUntilExit()
        }
    }

    func testDownloadFillsTheCacheAsHuggingfaceHubDoes() throws {
        let hub = try FakeHub(serving: "classifier_single")
        let home = try temporaryDirectory()
        var files: Set<String> = []
        let snapshot = try HubDownloader(environment: hub.environment(home)).download("facebook/vit-msn-tiny") { files.insert($0.file) }
        XCTAssertTrue(snapshot.hasSuffix("models--facebook--vit-msn-tiny/snapshots/0123456789abcdef0123456789abcdef01234567"))
        for file in ["config.json", "preprocessor_config.json", "model.safetensors"] {
            XCTAssertEqual(FileManager.default.contents(atPath: snapshot + "/" + file), FileManager.default.contents(atPath: Fixtures.model("classifier_single") + "/" + file), file)
            XCTAssertTrue(try FileManager.default.destinationOfSymbolicLink(atPath: snapshot + "/" + file).hasPrefix("../../blobs/"))
        }
        let repository = HubCache(environment: ["HF_HOME": home]).repositoryFolder("facebook/vit-msn-tiny")
        XCTAssertEqual(try String(contentsOfFile: repository + "/refs/main", encoding: .utf8), "0123456789abcdef0123456789abcdef01234567")
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: repository + "/blobs").contains { $0.hasSuffix(".incomplete") })
        XCTAssertTrue(files.contains("model.safetensors"))
        // The id now resolves like a directory.
        let model = try ViTMSNForImageClassification.load(directory: HubCache(environment: ["HF_HOME": home]).resolve("facebook/vit-msn-tiny"))
        XCTAssertEqual(model.config.numLabels, 5)
    }

    func testAnInterruptedDownloadResumesWithARangeRequest() throws {
        let hub = try FakeHub(serving: "base", arguments: ["--cut-first-lfs"])
        let home = try temporaryDirectory()
        let downloader = HubDownloader(environment: hub.environment(home))
        XCTAssertThrowsError(try downloader.download("facebook/vit-msn-tiny"), "the server cut the weights halfway")
        let blobs = HubCache(environment: ["HF_HOME": home]).repositoryFolder("facebook/vit-msn-tiny") + "/blobs"
        let partial = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: blobs).first { $0.hasSuffix(".incomplete") })
        let partialSize = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: blobs + "/" + partial)[.size] as? Int)
        XCTAssertGreaterThan(partialSize, 0)
        let snapshot = try downloader.download("facebook/vit-msn-tiny")
        XCTAssertEqual(FileManager.default.contents(atPath: snapshot + "/model.safetensors"), FileManager.default.contents(atPath: Fixtures.model("base") + "/model.safetensors"))
    }

    func testMissingModelsTokensAndOfflineMode() throws {
        let hub = try FakeHub(serving: "base", arguments: ["--token", "secret"])
        let home = try temporaryDirectory()
        XCTAssertThrowsError(try HubDownloader(environment: hub.environment(home)).download("facebook/vit-msn-tiny")) {
            XCTAssertTrue("\($0)".contains("set HF_TOKEN"), "\($0)")
        }
        XCTAssertNoThrow(try HubDownloader(environment: hub.environment(home, ["HF_TOKEN": "secret"])).download("facebook/vit-msn-tiny"))
        XCTAssertThrowsError(try HubDownloader(environment: hub.environment(home, ["HF_TOKEN": "secret"])).download("facebook/other")) {
            XCTAssertTrue("\($0)".contains("config.json does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try HubDownloader(environment: hub.environment(home, ["HF_HUB_OFFLINE": "1"])).download("facebook/vit-msn-tiny")) {
            XCTAssertTrue("\($0)".contains("HF_HUB_OFFLINE"), "\($0)")
        }
        // A revision is one URL segment and a path under refs/, never a way out of the cache.
        let downloader = HubDownloader(environment: hub.environment(home, ["HF_TOKEN": "secret"]))
        for revision in ["../../../../../escaped", "/etc/x", "a//b", "main/..", ""] {
            XCTAssertThrowsError(try downloader.download("facebook/vit-msn-tiny", revision: revision)) {
                XCTAssertTrue("\($0)".contains("is not a revision"), "\($0)")
            }
            XCTAssertThrowsError(try HubCache(environment: hub.environment(home)).snapshot("facebook/vit-msn-tiny", revision: revision))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: home + "/escaped"))
        let snapshot = try downloader.download("facebook/vit-msn-tiny", revision: "refs/pr/1")
        XCTAssertEqual(try HubCache(environment: hub.environment(home)).snapshot("facebook/vit-msn-tiny", revision: "refs/pr/1"), snapshot)
    }

    /// The token reaches the Hub but not the CDN its LFS redirects point to (another origin); a body longer
    /// than the size announced is cut off with a clear error instead of being written without end.
    func testTheTokenStaysWithTheHubAndBodiesStopAtTheirSize() throws {
        let cdn = try FakeHub(serving: "base", arguments: ["--token", "secret", "--cdn-host", "localhost"])
        let home = try temporaryDirectory()
        XCTAssertNoThrow(try HubDownloader(environment: cdn.environment(home, ["HF_TOKEN": "secret"])).download("facebook/vit-msn-tiny"),
                         "the CDN refuses requests that carry the Hub's token")
        let overlong = try FakeHub(serving: "base", arguments: ["--overlong-lfs"])
        let other = try temporaryDirectory()
        XCTAssertThrowsError(try HubDownloader(environment: overlong.environment(other)).download("facebook/vit-msn-tiny")) {
            XCTAssertTrue("\($0)".contains("more than the") && "\($0)".contains("bytes it announced"), "\($0)")
        }
        let partial = try FileManager.default.subpathsOfDirectory(atPath: other).filter { $0.hasSuffix(".incomplete") }
        let sizes = try partial.map { try FileManager.default.attributesOfItem(atPath: other + "/" + $0)[.size] as? Int ?? 0 }
        XCTAssertTrue(sizes.allSatisfy { $0 < 2_000_000 }, "no runaway .incomplete file: \(sizes)")
        // A trickle (500 bytes a second) is stopped once a window of HF_HUB_DOWNLOAD_TIMEOUT seconds is below 1 KB/s.
        let trickle = try FakeHub(serving: "base", arguments: ["--trickle-lfs"])
        let started = Date()
        XCTAssertThrowsError(try HubDownloader(environment: trickle.environment(try temporaryDirectory(), ["HF_HUB_DOWNLOAD_TIMEOUT": "1"])).download("facebook/vit-msn-tiny")) {
            XCTAssertTrue("\($0)".contains("slower than 1 KB/s over 1 s"), "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 30)
    }

    func testSHA256() {
        XCTAssertEqual(Array("abc".utf8).withUnsafeBytes { FileDigest.sha256Hex(of: $0) }, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual([UInt8]().withUnsafeBytes { FileDigest.sha256Hex(of: $0) }, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let long = [UInt8](repeating: 0x61, count: 1000)
        XCTAssertEqual(long.withUnsafeBytes { FileDigest.sha256Hex(of: $0) }, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }
}
