import Postgres
import Testing

@testable import Dashboard

/// Where the dashboard may listen, and with what credentials.
@Suite struct ConfigurationTests {
    let database = ConnectionConfiguration(conninfo: "")

    @Test(arguments: [
        ("127.0.0.1:8080", "127.0.0.1", 8080, true), ("localhost:0", "localhost", 0, true),
        ("[::1]:9000", "::1", 9000, true), ("0.0.0.0:80", "0.0.0.0", 80, false),
        ("10.1.2.3:8080", "10.1.2.3", 8080, false), ("127.8.9.10:1", "127.8.9.10", 1, true),
    ])
    func bindAddressesParse(bind: String, host: String, port: Int, loopback: Bool) throws {
        let config = try DashboardConfiguration(bind: bind, database: database)
        #expect(config.host == host && config.port == port && config.isLoopback == loopback)
    }

    @Test(arguments: ["8080", ":8080", "host:", "host:70000", "host:-1", "host:80x", ""])
    func malformedBindsAreRefusedWithOneLine(bind: String) {
        let error = #expect(throws: DashboardConfigurationError.self) {
            _ = try DashboardConfiguration(bind: bind, database: database)
        }
        #expect(error?.description.contains("--bind expects HOST:PORT") == true)
        #expect(error?.description.contains("\n") == false)
    }

    @Test func offLoopbackNeedsBothCredentials() throws {
        var config = try DashboardConfiguration(bind: "0.0.0.0:8080", database: database)
        try config.readCredentials(from: [:])
        #expect(throws: DashboardConfigurationError.self) { try config.validate() }
        #expect(throws: DashboardConfigurationError.self) {
            try config.readCredentials(from: ["PGCANVAS_DASHBOARD_USER": "ops"])
        }
        #expect(throws: DashboardConfigurationError.self) {
            try config.readCredentials(from: ["PGCANVAS_DASHBOARD_PASSWORD": "x", "PGCANVAS_DASHBOARD_USER": ""])
        }
        try config.readCredentials(from: ["PGCANVAS_DASHBOARD_USER": "ops", "PGCANVAS_DASHBOARD_PASSWORD": "pw"])
        try config.validate()
        #expect(config.credentials?.user == "ops")
    }

    @Test func loopbackNeedsNoCredentials() throws {
        let config = try DashboardConfiguration(bind: "127.0.0.1:8080", database: database)
        try config.validate()
    }
}
