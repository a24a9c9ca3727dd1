// tessera/host/fp8.h — FP8 e4m3 (OCP "E4M3FN", PTX .e4m3): 1 sign, 4 exponent (bias 7), 3 mantissa
// bits; no infinities, 0x7F / 0xFF are NaN, the largest finite value is 448, subnormals are
// m * 2^-9. Conversion from f32 rounds to nearest even and saturates to +-448 (cvt.rn.satfinite).
#pragma once

#include <stdint.h>

namespace tessera {
namespace host {

constexpr float E4M3_MAX = 448.0f;
constexpr int E4M3_BIAS = 7;
constexpr int E4M3_MIN_EXP = 1 - E4M3_BIAS;  // of normal numbers; subnormals share its quantum

inline float e4m3_to_float(uint8_t bits) {
  const int exp = (bits >> 3) & 0xF;
  const int man = bits & 0x7;
  if (exp == 0xF && man == 0x7) return __builtin_nanf("");
  const float magnitude = exp == 0 ? __builtin_ldexpf(static_cast<float>(man), E4M3_MIN_EXP - 3)
                                   : __builtin_ldexpf(static_cast<float>(8 + man), exp - E4M3_BIAS - 3);
  return (bits & 0x80) ? -magnitude : magnitude;
}

inline uint8_t float_to_e4m3(float f) {
  if (f != f) return 0x7F;
  const uint8_t sign = __builtin_signbit(f) ? 0x80 : 0x00;  // -0.0 keeps its sign
  float a = __builtin_fabsf(f);
  if (a >= E4M3_MAX) return sign | 0x7E;  // satfinite
  int exp = 0;
  __builtin_frexpf(a, &exp);  // a = m * 2^exp, m in [0.5, 1): the leading bit is 2^(exp - 1)
  int lead = exp - 1;
  if (lead < E4M3_MIN_EXP) lead = E4M3_MIN_EXP;
  // Round to a multiple of the quantum 2^(lead - 3) (ties to even: rint's default mode).
  const float steps = __builtin_rintf(__builtin_ldexpf(a, 3 - lead));
  a = __builtin_ldexpf(steps, lead - 3);
  if (a >= E4M3_MAX) return sign | 0x7E;
  if (a == 0.0f) return sign;
  __builtin_frexpf(a, &exp);
  lead = exp - 1;
  if (lead < E4M3_MIN_EXP) {  // subnormal: m * 2^-9
    return sign | static_cast<uint8_t>(__builtin_ldexpf(a, 3 - E4M3_MIN_EXP));
  }
  const int man = static_cast<int>(__builtin_ldexpf(a, 3 - lead)) - 8;
  return sign | static_cast<uint8_t>(((lead + E4M3_BIAS) << 3) | man);
}

}  // namespace host
}  // namespace tessera
