// swift-tools-version:6.0
// An app that uses swift-vitmsn as a dependency: `swift run ClassifyPhoto MODEL IMAGE...` prints what
// `vitmsn classify --json` prints, through the library's pipeline.
import Foundation
import PackageDescription

// A path dependency is known by its folder's name, whatever the clone is called.
let swiftVitmsn = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized

let package = Package(
    name: "ClassifyPhoto",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: swiftVitmsn.path)],
    targets: [
        .executableTarget(name: "ClassifyPhoto", dependencies: [.product(name: "ViTMSN", package: swiftVitmsn.lastPathComponent)]),
    ]
)
