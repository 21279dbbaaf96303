// swift-tools-version:6.0
// An example of a codec outside Wrapfs: XOR with a key, and a mount program of its own.
import Foundation
import PackageDescription

// Wrapfs itself, by path: this example lives in its examples/ directory (point it at your
// checkout when you copy it). A path dependency is named by its directory's name.
let wrapfs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardizedFileURL

let package = Package(
    name: "XorCodec",
    dependencies: [
        .package(path: wrapfs.path),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        .executableTarget(name: "xor-mount", dependencies: [
            .product(name: "Wrapfs", package: wrapfs.lastPathComponent.lowercased()),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
