// rescache-release: unpublished (an example program, run from a checkout; its gRPC requirement stays out of every published module)
module github.com/rescache/rescache/examples/grpcbackends

go 1.25.0

require (
	github.com/rescache/rescache v0.2.0
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.81.1
)

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	github.com/puzpuzpuz/xsync/v3 v3.5.1 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	go.opentelemetry.io/otel v1.46.0 // indirect
	go.opentelemetry.io/otel/sdk/metric v1.46.0 // indirect
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.41.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260226221140-a57be14db171 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)

replace github.com/rescache/rescache => ../../
