import Foundation

/// Calls `body` with a NULL-terminated array of C strings (an `argv` or `envp` for
/// `posix_spawn`) that live for the call.
///
/// `package`: the worker spawns its pool processes with it and TestSupport spawns workers with
/// it; it is no part of the library's API.
package func withCStringArray<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) throws -> R) rethrows
    -> R
{
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return try body(pointers)
}
