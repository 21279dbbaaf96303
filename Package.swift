// swift-tools-version:6.0
// Wrapfs for Swift: a stackable FUSE file system whose file content passes through page codecs.
import PackageDescription

let package = Package(
    name: "Wrapfs",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "Wrapfs", targets: ["Wrapfs"]),
        .library(name: "Codecs", targets: ["Codecs"]),
        .executable(name: "wrapfs-mount", targets: ["wrapfs-mount"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // 1.16: LogEvent (the handler's one log method).
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
    ],
    targets: [
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        .target(name: "Wrapfs", dependencies: [
            "CFuse", "COpenSSL",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "Codecs", dependencies: ["Wrapfs", "CZlib", "COpenSSL"]),
        .executableTarget(name: "wrapfs-mount", dependencies: [
            "Wrapfs", "Codecs", "CFuse", "COpenSSL",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "WrapfsTests", dependencies: ["Wrapfs", "Codecs", "CFuse", "COpenSSL"]),
    ],
    swiftLanguageModes: [.v5]
)
