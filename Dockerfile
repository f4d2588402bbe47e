# syntax=docker/dockerfile:1
# Multi-stage build of mcp-oauth-proxy into a small non-root image.
# The version comes from the git checkout (go build stamps the VCS tag and
# commit), so build from a clone: docker build -t mcp-oauth-proxy .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mcp-oauth-proxy .

# distroless/static: CA certificates, /etc/passwd with nonroot, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mcp-oauth-proxy /mcp-oauth-proxy
USER nonroot:nonroot
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["/mcp-oauth-proxy", "healthcheck"]
ENTRYPOINT ["/mcp-oauth-proxy"]
