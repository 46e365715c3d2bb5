// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "pgcanvas",
    // Built and tested on Linux only (Glibc, posix_spawn, /proc); macOS has not been tried.
    products: [
        // What an application adds: canvases, typed tasks, enqueue, results, control, the broker
        // protocol, the schema's migrations, and the Postgres layer a task's own queries use.
        .library(name: "PGCanvas", targets: ["PGCanvas", "Postgres", "Migrations"]),
        // `PGWorker.main(tasks:)`: the pgworker command line with an application's tasks.
        .library(name: "PGCanvasWorker", targets: ["PGCanvasWorker"]),
        .executable(name: "voteradmin", targets: ["voteradmin"]),
        .executable(name: "pgworker", targets: ["pgworker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
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
        // glibc's mallopt, for the worker's long-lived processes (PoolProcessMain).
        .systemLibrary(name: "CMalloc"),
        .target(
            name: "Migrations",
            dependencies: ["Postgres", .product(name: "Logging", package: "swift-log")],
            resources: [.copy("SQL")]
        ),
        .target(
            name: "PGCanvas",
            dependencies: [
                "Postgres", "CMalloc", .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "PGCanvasWorker",
            dependencies: [
                "PGCanvas", "Postgres", "CommandSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "VoterRolls",
            dependencies: [
                "Postgres", "PGCanvas", "RollPDF", "Migrations", .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.copy("Resources"), .copy("Migrations")]
        ),
        .target(
            name: "CommandSupport",
            dependencies: [
                "Postgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The web dashboard, /metrics and probes; `voteradmin dashboard` is a thin command over it.
        .target(
            name: "Dashboard",
            dependencies: [
                "Postgres", "Migrations", "PGCanvas",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "voteradmin",
            dependencies: [
                "Postgres", "Migrations", "VoterRolls", "CommandSupport", "PGCanvas", "Dashboard", "RollPDF",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(name: "pgworker", dependencies: ["PGCanvasWorker", "VoterRolls"]),
        .executableTarget(
            name: "canvas-bench", dependencies: ["PGCanvas", "Postgres", "RollPDF"], path: "bench/canvas-bench"),
        // A pgworker with the tasks RetryTests needs (retry policies, time limits), run as a real process.
        .executableTarget(
            name: "pgcanvas-testworker", dependencies: ["PGCanvasWorker", "PGCanvas"], path: "Tests/TestWorker"),
        .target(
            name: "TestSupport",
            dependencies: ["Postgres", "Migrations", "PGCanvas", "VoterRolls"],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
        .testTarget(name: "CanvasTests", dependencies: ["PGCanvas", "TestSupport"]),
        .testTarget(name: "VoterRollsTests", dependencies: ["VoterRolls", "RollPDF", "TestSupport"]),
        .testTarget(name: "DashboardTests", dependencies: ["Dashboard", "PGCanvas", "Postgres", "TestSupport"]),
        .testTarget(
            name: "IntegrationTests", dependencies: ["Postgres", "Migrations", "PGCanvas", "VoterRolls", "TestSupport"]),
    ]
)
