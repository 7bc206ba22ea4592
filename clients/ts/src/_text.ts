/**
 * UTF-8 decoding that keeps a leading U+FEFF, installed when the package loads.
 *
 * protobuf-es decodes strings with a default `TextDecoder`, which strips one
 * leading byte order mark: a NodeLog line read from a file that starts with
 * a BOM lost it in TypeScript only. A protobuf string is its bytes, so this
 * client configures protobuf-es (its documented `configureTextEncoding` hook,
 * process-wide) with decoders that set `ignoreBOM`. Encoding is unchanged.
 */

import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

const lenient = new TextDecoder("utf-8", { ignoreBOM: true });
const strict = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
const { encodeUtf8, checkUtf8 } = getTextEncoding();

configureTextEncoding({
  encodeUtf8,
  checkUtf8,
  decodeUtf8: (bytes: Uint8Array, strictly?: boolean): string =>
    (strictly ? strict : lenient).decode(bytes),
});
