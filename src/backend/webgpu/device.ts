/**
 * Opening a WebGPU device through Deno's built-in `navigator.gpu`: adapter choice (hardware
 * only unless a software adapter is asked for), the limits daint8 needs (the adapter's own,
 * requested in full), and whether an adapter is a software one (Mesa's llvmpipe / lavapipe, a
 * fallback adapter).
 *
 * @module
 */

/** Storage buffers the widest kernel binds (the quantizer decision). */
export const STORAGE_BUFFERS = 9;

/** The device limits the backend splits work by (bytes, workgroups). */
export interface WebGpuLimits {
  /** Largest storage buffer one binding may cover, in bytes. */
  maxStorageBufferBindingSize: number;
  /** Largest buffer, in bytes. */
  maxBufferSize: number;
  /** Largest workgroup count per dispatch dimension. */
  maxComputeWorkgroupsPerDimension: number;
}

/** An opened adapter and device. */
export interface OpenedDevice {
  /** The adapter the device came from. */
  adapter: GPUAdapter;
  /** The device, with the adapter's limits requested. */
  device: GPUDevice;
  /** A one-line description (adapter name, vendor, software or hardware). */
  description: string;
  /** True for a software adapter (llvmpipe / lavapipe / a fallback adapter). */
  software: boolean;
}

/** Whether `info` describes a software adapter (lavapipe reports llvmpipe, a fallback adapter). */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`
    .toLowerCase();
  return (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
    text.includes("llvmpipe") || text.includes("lavapipe") || text.includes("swiftshader");
}

/** Describes an adapter in one line. */
export function describeAdapter(info: GPUAdapterInfo): string {
  const name = info.description || info.device || "unknown device";
  const sw = isSoftwareAdapter(info) ? ", software adapter" : "";
  return `WebGPU: ${name} (vendor ${info.vendor || "?"}${sw})`;
}

/**
 * Requests an adapter and a device with the adapter's storage, buffer and dispatch limits.
 * Throws an Error naming the reason when WebGPU is missing, no adapter is found, or the only
 * adapter is a software one and `allowSoftware` is false.
 */
export async function openDevice(allowSoftware: boolean): Promise<OpenedDevice> {
  const gpu = (globalThis.navigator as { gpu?: GPU } | undefined)?.gpu;
  if (!gpu) throw new Error("WebGPU is not available in this runtime (navigator.gpu is missing)");
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("No WebGPU adapter found");
  if (isSoftwareAdapter(adapter.info) && !allowSoftware) {
    throw new Error(
      `The only WebGPU adapter is a software one (${adapter.info.description}); ` +
        `ask for it with --backend webgpu`,
    );
  }
  const features = (gpu as { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures;
  if (!features?.has("packed_4x8_integer_dot_product")) {
    throw new Error(
      "This WebGPU implementation lacks the WGSL feature packed_4x8_integer_dot_product " +
        "(dot4I8Packed), which the int8 kernels need",
    );
  }
  const l = adapter.limits;
  if (l.maxStorageBuffersPerShaderStage < STORAGE_BUFFERS) {
    throw new Error(
      `The WebGPU adapter ${adapter.info.description || adapter.info.device} allows ` +
        `${l.maxStorageBuffersPerShaderStage} storage buffers per shader stage; the kernels need ` +
        `${STORAGE_BUFFERS} (maxStorageBuffersPerShaderStage)`,
    );
  }
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: STORAGE_BUFFERS,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxComputeWorkgroupStorageSize: Math.min(l.maxComputeWorkgroupStorageSize, 32768),
    },
  });
  const info = adapter.info;
  const out = { adapter, device, description: describeAdapter(info), software: false };
  out.software = isSoftwareAdapter(info);
  return out;
}
