// swift-tools-version:6.1
// SmartSchool (智慧学校) platform services: four gRPC services sharing one model and one runtime.

import PackageDescription

let grpcCore: Target.Dependency = .product(name: "GRPCCore", package: "grpc-swift-2")
let grpcHTTP2: Target.Dependency = .product(
  name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport")
let grpcProtobuf: Target.Dependency = .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf")
let swiftProtobuf: Target.Dependency = .product(name: "SwiftProtobuf", package: "swift-protobuf")
let grdb: Target.Dependency = .product(name: "GRDB", package: "GRDB.swift")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")
let cryptoExtras: Target.Dependency = .product(name: "CryptoExtras", package: "swift-crypto")
let argumentParser: Target.Dependency = .product(
  name: "ArgumentParser", package: "swift-argument-parser")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let lifecycle: Target.Dependency = .product(
  name: "ServiceLifecycle", package: "swift-service-lifecycle")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let nioHTTP1: Target.Dependency = .product(name: "NIOHTTP1", package: "swift-nio")
let nioHTTP2: Target.Dependency = .product(name: "NIOHTTP2", package: "swift-nio-http2")
let nioHPACK: Target.Dependency = .product(name: "NIOHPACK", package: "swift-nio-http2")
let postgres: Target.Dependency = .product(name: "PostgresNIO", package: "postgres-nio")

let package = Package(
  name: "SmartSchool",
  platforms: [.macOS(.v15)],
  products: [
    .executable(name: "identity-service", targets: ["identity-service"]),
    .library(name: "SmartSchoolModel", targets: ["SmartSchoolModel"]),
    .library(name: "ServiceRuntime", targets: ["ServiceRuntime"]),
    .executable(name: "supervision-service", targets: ["supervision-service"]),
    .executable(name: "supervision-bench", targets: ["supervision-bench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
  ],
  targets: [
    // Shared: generated protobuf/gRPC code and the domain vocabulary every service speaks.
    .target(
      name: "SmartSchoolModel",
      dependencies: [grpcCore, grpcProtobuf, swiftProtobuf],
      path: "Shared/Model"
    ),
    // Shared: what every service does the same way (host, auth, storage, errors, paging...).
    .target(
      name: "ServiceRuntime",
      dependencies: [
        "SmartSchoolModel", grpcCore, grpcHTTP2, grpcProtobuf, swiftProtobuf, grdb, crypto,
        argumentParser, logging, prometheus, lifecycle, nioCore, nioPosix, nioHTTP1, nioHTTP2,
        nioHPACK, postgres, .product(name: "GRDBSQLite", package: "GRDB.swift"),
      ],
      path: "Shared/Runtime"
    ),

    // Identity (统一身份认证).
    .target(
      name: "IdentityService",
      dependencies: [
        "SmartSchoolModel", "ServiceRuntime", grpcCore, grpcProtobuf, swiftProtobuf, grdb, crypto,
        cryptoExtras, logging, postgres, lifecycle, nioCore,
        .product(name: "Hummingbird", package: "hummingbird"),
        .product(name: "HummingbirdTLS", package: "hummingbird"),
      ],
      path: "Services/Identity/IdentityService"
    ),
    .executableTarget(
      name: "identity-service",
      dependencies: ["IdentityService", "ServiceRuntime", argumentParser],
      path: "Services/Identity/identity-service"
    ),

    // Benchmarks are programs: they print figures and ratios against a same-run baseline.
    .executableTarget(
      name: "identity-bench",
      dependencies: [
        "IdentityService", "ServiceRuntime", "SmartSchoolModel", grpcCore, grpcHTTP2, crypto, grdb,
        logging,
      ],
      path: "Tests/Benchmarks/identity-bench"
    ),
    .executableTarget(
      name: "directory-bench",
      dependencies: ["ServiceRuntime", "SmartSchoolModel", logging, swiftProtobuf],
      path: "Tests/Benchmarks/directory-bench"
    ),

    // Tests mirror the sources; shared helpers live in one support target.
    .target(
      name: "TestSupport",
      dependencies: [
        "SmartSchoolModel", "ServiceRuntime", "IdentityService", grpcCore, grpcHTTP2, crypto,
      ],
      path: "Tests/TestSupport"
    ),
    .testTarget(
      name: "ModelTests",
      dependencies: ["SmartSchoolModel"],
      path: "Tests/ModelTests"
    ),
    .testTarget(
      name: "RuntimeTests",
      dependencies: [
        "ServiceRuntime", "SmartSchoolModel", "TestSupport", "IdentityService", grpcCore, grpcHTTP2,
        grdb, swiftProtobuf, crypto, logging, postgres, argumentParser,
      ],
      path: "Tests/RuntimeTests"
    ),
    .testTarget(
      name: "IdentityServiceTests",
      dependencies: [
        "IdentityService", "ServiceRuntime", "SmartSchoolModel", "TestSupport", grpcCore,
        grpcHTTP2, grpcProtobuf, crypto,
        // OIDC token tests: a client's audience is checked by a real catalogue server.
        "CatalogueService",
      ],
      path: "Tests/IdentityServiceTests"
    ),
    .testTarget(
      name: "EndToEndTests",
      dependencies: ["SmartSchoolModel", "TestSupport", grpcCore, grpcHTTP2, grdb],
      path: "Tests/EndToEndTests"
    ),
    // Supervision (智慧学校应用建设监管平台, 督导): service, executable, benchmark and tests.
    .target(
      name: "SupervisionService",
      dependencies: [
        "SmartSchoolModel", "ServiceRuntime", grpcCore, grpcProtobuf, swiftProtobuf, grdb, logging,
        postgres,
      ],
      path: "Services/Supervision/SupervisionService"
    ),
    .executableTarget(
      name: "supervision-service",
      dependencies: ["SupervisionService", "ServiceRuntime", argumentParser],
      path: "Services/Supervision/supervision-service"
    ),
    .executableTarget(
      name: "supervision-bench",
      dependencies: [
        "SupervisionService", "ServiceRuntime", "SmartSchoolModel", grpcCore, grpcHTTP2, crypto,
        logging,
      ],
      path: "Tests/Benchmarks/supervision-bench"
    ),
    .testTarget(
      name: "SupervisionServiceTests",
      dependencies: [
        "SupervisionService", "ServiceRuntime", "SmartSchoolModel", "TestSupport", grpcCore,
        grpcHTTP2, grpcProtobuf, crypto, logging,
      ],
      path: "Tests/SupervisionServiceTests"
    ),
    // Assessment service (学业评价): pure statistics library and its unit tests.
    .target(
      name: "AssessmentService",
      dependencies: [
        "SmartSchoolModel", "ServiceRuntime", grpcCore, grpcProtobuf, swiftProtobuf, grdb, logging,
        postgres,
      ],
      path: "Services/Assessment/AssessmentService"
    ),
    .testTarget(
      name: "AssessmentServiceTests",
      dependencies: [
        "AssessmentService", "ServiceRuntime", "SmartSchoolModel", "TestSupport", "IdentityService",
        grpcCore, grpcHTTP2, grpcProtobuf, swiftProtobuf, logging, grdb, postgres,
      ],
      path: "Tests/AssessmentServiceTests"
    ),
  ],
  swiftLanguageModes: [.v6]
)

// Catalogue (统一资源管理): library, executable, benchmark and tests.
package.products.append(.executable(name: "catalogue-service", targets: ["catalogue-service"]))
package.targets.append(contentsOf: [
  .target(
    name: "CatalogueService",
    dependencies: [
      "SmartSchoolModel", "ServiceRuntime", grpcCore, grpcProtobuf, swiftProtobuf, grdb, crypto,
      logging, postgres,
    ],
    path: "Services/Catalogue/CatalogueService"
  ),
  .executableTarget(
    name: "catalogue-service",
    dependencies: ["CatalogueService", "ServiceRuntime", argumentParser],
    path: "Services/Catalogue/catalogue-service"
  ),
  .executableTarget(
    name: "catalogue-bench",
    dependencies: [
      "CatalogueService", "ServiceRuntime", "SmartSchoolModel", grpcCore, grpcHTTP2, crypto,
      logging,
    ],
    path: "Tests/Benchmarks/catalogue-bench"
  ),
  .executableTarget(
    name: "content-bench",
    dependencies: [
      "CatalogueService", "ServiceRuntime", "SmartSchoolModel", grpcCore, grpcHTTP2, crypto,
      logging, swiftProtobuf,
    ],
    path: "Tests/Benchmarks/content-bench"
  ),
  .testTarget(
    name: "CatalogueServiceTests",
    dependencies: [
      "CatalogueService", "ServiceRuntime", "SmartSchoolModel", "TestSupport", "IdentityService",
      grpcCore, grpcHTTP2, grpcProtobuf, swiftProtobuf, crypto, grdb, postgres,
    ],
    path: "Tests/CatalogueServiceTests"
  ),
])

// Assessment (学业评价): executable and benchmark.
package.products.append(.executable(name: "assessment-service", targets: ["assessment-service"]))
package.targets.append(contentsOf: [
  .executableTarget(
    name: "assessment-service",
    dependencies: ["AssessmentService", "ServiceRuntime", argumentParser],
    path: "Services/Assessment/assessment-service"
  ),
  .executableTarget(
    name: "assessment-bench",
    dependencies: [
      "AssessmentService", "ServiceRuntime", "SmartSchoolModel", "TestSupport", "IdentityService",
      grpcCore, grpcHTTP2, logging,
    ],
    path: "Tests/Benchmarks/assessment-bench"
  ),
])

// Robustness (hostile input, authorisation) across every service, in-process.
package.targets.append(
  .testTarget(
    name: "RobustnessTests",
    dependencies: [
      "IdentityService", "CatalogueService", "SupervisionService", "AssessmentService",
      "ServiceRuntime",
      "SmartSchoolModel", "TestSupport", grpcCore, grpcHTTP2, grpcProtobuf, swiftProtobuf,
    ],
    path: "Tests/RobustnessTests"
  ))

// The suite under load: the release executables against a bare echo server (not part of CI).
package.targets.append(
  .executableTarget(
    name: "suite-bench",
    dependencies: ["SmartSchoolModel", grpcCore, grpcHTTP2],
    path: "Tests/Benchmarks/suite-bench"
  ))
// A province slice on PostgreSQL, one and three replicas behind nginx (not part of CI).
package.products.append(.executable(name: "province-bench", targets: ["province-bench"]))
package.targets.append(
  .executableTarget(
    name: "province-bench",
    dependencies: ["SmartSchoolModel", grpcCore, grpcHTTP2],
    path: "Tests/Benchmarks/province-bench"
  ))

// Client SDK (SmartSchoolClient), the `smartschool` CLI and their tests.
package.products.append(contentsOf: [
  .library(name: "SmartSchoolClient", targets: ["SmartSchoolClient"]),
  .executable(name: "smartschool", targets: ["smartschool"]),
])
package.targets.append(contentsOf: [
  .target(
    name: "SmartSchoolClient",
    dependencies: ["SmartSchoolModel", "ServiceRuntime", grpcCore, grpcHTTP2, swiftProtobuf],
    path: "Shared/Client"
  ),
  .target(
    name: "SmartSchoolCLI",
    dependencies: [
      "SmartSchoolClient", "SmartSchoolModel", "ServiceRuntime", grpcCore, grpcHTTP2,
      swiftProtobuf, argumentParser, crypto,
    ],
    path: "Services/CLI/SmartSchoolCLI"
  ),
  .executableTarget(
    name: "smartschool",
    dependencies: ["SmartSchoolCLI", argumentParser],
    path: "Services/CLI/smartschool"
  ),
  .testTarget(
    name: "ClientTests",
    dependencies: [
      "SmartSchoolClient", "SmartSchoolCLI", "SmartSchoolModel", "ServiceRuntime", "TestSupport",
      "IdentityService", "SupervisionService", "CatalogueService", "AssessmentService",
      grpcCore, grpcHTTP2, swiftProtobuf,
    ],
    path: "Tests/ClientTests"
  ),
])

// Release executables link with lld, pack their relative relocations (RELR, glibc ≥ 2.36) and
// export no symbols. A static-stdlib service is a position-independent executable with ~145,000
// relative relocations: as RELA entries they are 3.4 MB that the loader reads at every start and
// that stay resident; packed, they are 28 KB. The toolchain's static link also exports all of
// the package's 61,000 symbols (-export-dynamic), whose tables the loader searches while binding
// and which nothing looks up. Together: idle RSS about 7 MiB lower, ASLR kept.
for target in package.targets where target.type == .executable {
  target.linkerSettings =
    (target.linkerSettings ?? []) + [
      .unsafeFlags(
        [
          "-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker",
          "--no-export-dynamic",
        ],
        .when(platforms: [.linux], configuration: .release))
    ]
}
