extension Connection {
    /// Runs `body` inside BEGIN … COMMIT; rolls back and rethrows when `body` throws.
    ///
    /// A failed COMMIT (serialization failure, broken connection) throws, and the caller must
    /// treat the work as not done.
    public func withTransaction<T>(_ body: (Connection) throws -> T) throws -> T {
        try executeScript("BEGIN")
        let value: T
        do {
            value = try body(self)
        } catch {
            if isHealthy { try? executeScript("ROLLBACK") }
            throw error
        }
        try executeScript("COMMIT")
        return value
    }
}
