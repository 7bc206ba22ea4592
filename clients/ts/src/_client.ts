/** A RunService client over Connect's gRPC (HTTP/2) transport. */

import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { RunService } from "./gen/runwire/v1/run_service_pb.js";

/** The generated promise client of `runwire.v1.RunService`. */
export type RunServiceClient = Client<typeof RunService>;

/**
 * Creates a RunService client for `address`: `host:port` (plaintext, as the
 * server listens on loopback by default) or a full `http://` / `https://` URL.
 *
 * @param options extra transport options, e.g. `interceptors` for a bearer token.
 */
export function createRunServiceClient(
  address: string,
  options: Partial<GrpcTransportOptions> = {},
): RunServiceClient {
  const baseUrl = /^https?:\/\//.test(address) ? address : `http://${address}`;
  return createClient(RunService, createGrpcTransport({ ...options, baseUrl }));
}
