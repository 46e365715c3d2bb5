// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "pgcanvas",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "voteradmin", targets: ["voteradmin"]),
        .executable(name: "pgworker", targets: ["pgworker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // The only target that sees libpq's C API.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "Postgres", dependencies: ["CLibPQ"]),
        // The only target that sees cairo's C API.
        .systemLibrary(
            name: "CCairo",
            pkgConfig: "cairo",
            providers: [.apt(["libcairo2-dev"])]
        ),
        .target(name: "RollPDF", dependencies: ["CCairo"]),
        .target(
            name: "Migrations",
            dependencies: ["Postgres", .product(name: "Logging", package: "swift-log")],
            resources: [.copy("SQL")]
        ),
        .target(
            name: "Canvas",
            dependencies: ["Postgres", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "VoterRolls",
            dependencies: ["Postgres", "Canvas", "RollPDF", .product(name: "Logging", package: "swift-log")],
            resources: [.copy("Resources")]
        ),
        .target(
            name: "CommandSupport",
            dependencies: [
                "Postgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "voteradmin",
            dependencies: [
                "Postgres", "Migrations", "VoterRolls", "CommandSupport", "Canvas",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "pgworker",
            dependencies: [
                "Postgres", "CommandSupport", "Canvas", "VoterRolls",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "canvas-bench", dependencies: ["Canvas", "Postgres", "RollPDF"], path: "bench/canvas-bench"),
        .target(
            name: "TestSupport",
            dependencies: ["Postgres", "Migrations"],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
        .testTarget(name: "CanvasTests", dependencies: ["Canvas"]),
        .testTarget(name: "VoterRollsTests", dependencies: ["VoterRolls", "RollPDF", "TestSupport"]),
        .testTarget(
            name: "IntegrationTests", dependencies: ["Postgres", "Migrations", "Canvas", "VoterRolls", "TestSupport"]),
    ]
)
