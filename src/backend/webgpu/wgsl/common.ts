/**
 * WGSL shared by every kernel: the parameter block (binding 0, a 256-byte uniform slot read with
 * a dynamic offset), linear thread ids over 2-D dispatches, int8 byte extraction and the
 * quantizer of kernels/cpu/quant.cpp written with 32-bit arithmetic only.
 *
 * @module
 */

/** How a storage binding is used: read-only or read-write, and its WGSL element type. */
export interface Binding {
  /** WGSL name of the array. */
  name: string;
  /** WGSL element type (`f32`, `u32`, `i32`, `atomic<u32>`). */
  type: string;
  /** True when the kernel writes it. */
  write: boolean;
}

/** A compute kernel: WGSL source (without its bindings) and its storage bindings, in order. */
export interface KernelSpec {
  /** Name for error messages and the pipeline cache. */
  name: string;
  /** Storage bindings 1..n (binding 0 is the parameter block). */
  bindings: Binding[];
  /** The WGSL body: helper functions and an entry point `main`. */
  body: string;
  /**
   * Every binding is an f32 array indexed by the item (word 0 = items): work on operands larger
   * than one binding may be is split into binding-sized chunks.
   */
  elementwise?: boolean;
}

/** Threads per workgroup of the one-dimensional kernels. */
export const WG = 256;

/** The parameter block and helpers every kernel starts with. */
export const PRELUDE = /* wgsl */ `
struct Params { v: array<vec4<u32>, 16> }
@group(0) @binding(0) var<uniform> P: Params;
fn pu(i: u32) -> u32 { return P.v[i >> 2u][i & 3u]; }
fn pi(i: u32) -> i32 { return bitcast<i32>(pu(i)); }
fn pf(i: u32) -> f32 { return bitcast<f32>(pu(i)); }
// Word 63 of the block is always 0: xor-ing with it hides a value from the compiler, so no
// multiply-add around it is contracted into an fma (the cpu rounds each operation).
fn opq(x: f32) -> f32 { return bitcast<f32>(bitcast<u32>(x) ^ pu(63u)); }
fn lin(g: vec3<u32>, nw: vec3<u32>) -> u32 { return g.x + g.y * nw.x * ${WG}u; }
fn wgid(w: vec3<u32>, nw: vec3<u32>) -> u32 { return w.x + w.y * nw.x; }
fn i8at(word: u32, i: u32) -> i32 { return bitcast<i32>(word << (24u - 8u * (i & 3u))) >> 24u; }
fn u8at(word: u32, i: u32) -> u32 { return (word >> (8u * (i & 3u))) & 255u; }
fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
fn isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
// a / b correctly rounded (to nearest even) for finite a and b > 0, in 32-bit integer
// arithmetic: WGSL's division may be 2.5 ulp off, and quantization must equal the cpu's bit for
// bit. A subnormal quotient falls back to the device's division.
fn fdiv(a0: f32, b: f32) -> f32 {
  let a = abs(a0);
  if (a == 0.0) { return 0.0; }
  let ua = bitcast<u32>(a); let ub = bitcast<u32>(b);
  var ea = i32(ua >> 23u); var ma = ua & 0x7fffffu;
  if (ea == 0) { ea = 1; while ((ma & 0x800000u) == 0u) { ma <<= 1u; ea -= 1; } } else { ma |= 0x800000u; }
  var eb = i32(ub >> 23u); var mb = ub & 0x7fffffu;
  if (eb == 0) { eb = 1; while ((mb & 0x800000u) == 0u) { mb <<= 1u; eb -= 1; } } else { mb |= 0x800000u; }
  var e = ea - eb;
  var rem = ma;
  if (rem < mb) { rem <<= 1u; e -= 1; }
  var q = 0u;
  for (var i = 0u; i < 25u; i++) {
    q <<= 1u;
    if (rem >= mb) { rem -= mb; q |= 1u; }
    rem <<= 1u;
  }
  var m = q >> 1u;
  if ((q & 1u) == 1u && (rem != 0u || (m & 1u) == 1u)) { m += 1u; }
  if (m == 0x1000000u) { m >>= 1u; e += 1; }
  let biased = e + 127;
  var r: f32;
  if (biased >= 255) { r = bitcast<f32>(0x7f800000u); }
  else if (biased <= 0) { r = a / b; }
  else { r = bitcast<f32>((u32(biased) << 23u) | (m & 0x7fffffu)); }
  return select(r, -r, a0 < 0.0);
}
fn inv_of(s: f32) -> f32 {
  if (s > 0.0 && (bitcast<u32>(s) & 0x7fffffffu) < 0x7f800000u) { return fdiv(127.0, s); }
  return 0.0;
}
fn scale_of(s: f32) -> f32 {
  if (s > 0.0 && (bitcast<u32>(s) & 0x7fffffffu) < 0x7f800000u) { return fdiv(s, 127.0); }
  return 0.0;
}
fn mix32(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u; x *= 0x7feb352du; x ^= x >> 15u; x *= 0x846ca68bu; x ^= x >> 16u;
  return x;
}
// Keys of the stochastic-rounding hash for elements whose index has high word 0.
fn key0(seed: u32) -> u32 { return mix32(seed ^ 0x9e3779b9u); }
fn key1(k0: u32) -> u32 { return mix32(k0 + 0x632be5abu); }
// One element of kernels/cpu/quant.cpp quant1 from v = x * inv.
fn quant1(v0: f32, stoch: bool, lo: u32, k0: u32, k1: u32) -> i32 {
  var v = opq(v0);
  if (isnan(v)) { v = 0.0; }
  v = min(max(v, -127.0), 127.0);
  if (stoch) {
    let h = mix32(mix32(lo ^ k0) + k1);
    let f = opq(v) + f32(h >> 8u) * (1.0 / 16777216.0);
    var t = i32(f);
    let d = opq(f - f32(t));
    t += bitcast<i32>(d) >> 31u;
    return min(t, 127);
  }
  var t = i32(v);
  let d = opq(v - f32(t));
  return t + i32(d + d);
}
`;

/** Declarations of a kernel's storage bindings. */
export function declare(bindings: Binding[]): string {
  return bindings.map((b, i) =>
    `@group(0) @binding(${i + 1}) var<storage, ${
      b.write ? "read_write" : "read"
    }> ${b.name}: array<${b.type}>;`
  ).join("\n");
}

/** The full WGSL of `spec`. */
export function source(spec: KernelSpec): string {
  return `${PRELUDE}\n${declare(spec.bindings)}\n${spec.body}`;
}

/** Shorthands for bindings. */
export const r = (name: string, type = "f32"): Binding => ({ name, type, write: false });
/** A read-write binding. */
export const w = (name: string, type = "f32"): Binding => ({ name, type, write: true });

/** Entry point header of a one-thread-per-item kernel over `pu(0)` items. */
export const LINEAR_MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let i = lin(gid, nw);
  if (i >= pu(0u)) { return; }`;

/** Entry point header of a one-workgroup-per-item kernel (`item`, thread `t` of WG). */
export const GROUP_MAIN = `@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let item = wgid(wid, nw);`;
