// SeeAloud wire protocol v1 for browsers: see protocol/README.md.
// Text messages: {"type", "id"?, "data"}. Binary: uint16 BE header length | JSON header | payload.

export const PROTOCOL_VERSION = 1;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function textMessage(type, data = {}, id = undefined) {
  const msg = { type };
  if (id !== undefined) msg.id = id;
  msg.data = data;
  return JSON.stringify(msg);
}

export function binaryMessage(header, payload) {
  const head = encoder.encode(JSON.stringify(header));
  const body = payload instanceof Uint8Array ? payload : new Uint8Array(payload);
  const out = new Uint8Array(2 + head.length + body.length);
  new DataView(out.buffer).setUint16(0, head.length, false);
  out.set(head, 2);
  out.set(body, 2 + head.length);
  return out;
}

// Returns {type, id, data, payload?}; binary messages carry their header fields in data.
export function decode(raw) {
  if (typeof raw === "string") {
    const msg = JSON.parse(raw);
    return { type: msg.type, id: msg.id, data: msg.data || {} };
  }
  const bytes = new Uint8Array(raw);
  const len = new DataView(bytes.buffer, bytes.byteOffset).getUint16(0, false);
  const header = JSON.parse(decoder.decode(bytes.subarray(2, 2 + len)));
  const { type, id, ...data } = header;
  return { type, id, data, payload: bytes.subarray(2 + len) };
}
