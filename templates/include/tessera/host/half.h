// tessera/host/half.h — host f16 and bf16 storage types with round-to-nearest-even conversions.
//
// Bit-exact with the device's __float2half_rn / __float2bfloat16_rn: subnormals, overflow to
// infinity and NaN included. Arithmetic always goes through float, as in the kernels.
#pragma once

#include <stdint.h>
#include <string.h>

// The host build compiles kernels at -O0 (fast to build); the emulator itself stays optimised.
#pragma GCC push_options
#pragma GCC optimize("O2")

namespace tessera {
namespace host {

inline uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
inline uint16_t float_to_f16_bits(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN (NaN stays quiet NaN)
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x0200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504
  const int exp = static_cast<int>(abs >> 23) - 127;
  if (exp < -25) return static_cast<uint16_t>(sign);  // below half the smallest subnormal
  uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  int shift;  // bits of the 24-bit significand dropped
  uint32_t base;
  if (exp < -14) {  // subnormal half: value = m * 2^-24
    shift = 13 + (-14 - exp);
    base = 0;
  } else {
    shift = 13;
    base = static_cast<uint32_t>(exp + 15) << 10;
    mant &= 0x7fffffu;  // the implicit bit is carried by the exponent field
  }
  const uint32_t kept = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  uint32_t result = base + kept;  // a mantissa carry correctly bumps the exponent
  if (rest > half || (rest == half && (kept & 1u))) ++result;
  return static_cast<uint16_t>(sign | result);
}

inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float value = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -value : value;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_bf16_bits(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

struct f16 {
  uint16_t bits;
  static f16 from_float(float x) { return f16{float_to_f16_bits(x)}; }
  float to_float() const { return f16_bits_to_float(bits); }
};

struct bf16 {
  uint16_t bits;
  static bf16 from_float(float x) { return bf16{float_to_bf16_bits(x)}; }
  float to_float() const { return bf16_bits_to_float(bits); }
};

static_assert(sizeof(f16) == 2 && sizeof(bf16) == 2, "16-bit storage types");

// FP8 E4M3 (PTX ISA ".e4m3", the OCP float8 e4m3fn): 1 sign, 4 exponent (bias 7) and 3
// mantissa bits; no infinities: S.1111.111 (0x7f, 0xff) is NaN and S.1111.110 is +-448, the
// largest; exponent 0 holds zero and the subnormals m * 2^-9. Every value is exact in float.
constexpr int E4M3_BIAS = 7;
constexpr int E4M3_MANTISSA_BITS = 3;
inline float e4m3_bits_to_float(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  const uint32_t exp = (b >> E4M3_MANTISSA_BITS) & 0xfu;
  const uint32_t mant = b & 0x7u;
  if (exp == 0xfu && mant == 0x7u) return bits_float(sign | 0x7fc00000u);  // NaN
  if (exp == 0) {  // zero or subnormal: mant * 2^-9
    const float value = static_cast<float>(mant) * 0.001953125f;
    return sign ? -value : value;
  }
  // Normal: 2^(exp - 7) * (1 + mant / 8); rebias to float's 127, widen the mantissa to 23 bits.
  return bits_float(sign | ((exp + 127u - E4M3_BIAS) << 23) | (mant << (23 - E4M3_MANTISSA_BITS)));
}

}  // namespace host
}  // namespace tessera

#pragma GCC pop_options
