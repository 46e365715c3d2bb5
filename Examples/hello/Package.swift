// swift-tools-version:6.0
// A stranger's application on pgcanvas: typed tasks, its own worker, a command that runs a chord.
import PackageDescription

let package = Package(
    name: "hello",
    dependencies: [
        // In an application of your own: .package(url: "https://…/pgcanvas", from: "0.1.0")
        .package(name: "pgcanvas", path: "../..")
    ],
    targets: [
        // The tasks, shared by the worker (which runs them) and the command (which enqueues them).
        .target(name: "HelloTasks", dependencies: [.product(name: "PGCanvas", package: "pgcanvas")]),
        .executableTarget(
            name: "hello-worker", dependencies: ["HelloTasks", .product(name: "PGCanvasWorker", package: "pgcanvas")]),
        .executableTarget(
            name: "hello", dependencies: ["HelloTasks", .product(name: "PGCanvas", package: "pgcanvas")]),
    ]
)
