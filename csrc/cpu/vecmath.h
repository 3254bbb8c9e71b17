// Branch-free, auto-vectorisable exp for the CPU kernels (std::exp calls do not vectorise without
// -ffast-math, and the sensitivities need ~10 exps per pair).
//
// Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, then a polynomial for e^r and 2^k built in the
// exponent bits. float: cephes' expf polynomial (max error ~2 ulp); double: Taylor series to degree 13
// (truncation < 5e-18 relative, so rounding dominates: ~2 ulp). Both are smooth inside each k interval,
// so finite-difference gradient checks in float64 see no kinks. Inputs below about -87 (float) / -708
// (double) are clamped there (results below 1e-37 / 1e-307 instead of denormals or 0, irrelevant next to
// the 1e-10 sensitivity floor); the kernels only call it with x <= 0. NaN propagates.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdipole::cpu {

// A memcpy bit cast blocks GCC's vectoriser; __builtin_bit_cast (GCC >= 11, Clang >= 9) does not.
template <typename To, typename From>
inline To bit_cast_value(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast_value: sizes differ");
#if defined(__has_builtin)
#if __has_builtin(__builtin_bit_cast)
#define FD_HAVE_BUILTIN_BIT_CAST 1
#endif
#endif
#ifdef FD_HAVE_BUILTIN_BIT_CAST
  return __builtin_bit_cast(To, v);
#else
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
#endif
}

inline float exp_poly(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer kept in the low bits
  const float kd = x * 1.44269504088896341f + magic;
  const int32_t ki = bit_cast_value<int32_t>(kd) - bit_cast_value<int32_t>(magic);
  const float k = kd - magic;
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const float scale = bit_cast_value<float>((ki + 127) << 23);
  return p * scale;
}

inline double exp_poly(double x) {
  x = x < -708.0 ? -708.0 : x;
  const double magic = 6755399441055744.0;  // 1.5 * 2^52
  const double kd = x * 1.4426950408889634074 + magic;
  const int64_t ki = bit_cast_value<int64_t>(kd) - bit_cast_value<int64_t>(magic);
  const double k = kd - magic;
  const double r = (x - k * 6.93145751953125e-1) - k * 1.42860682030941723212e-6;
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  const double scale = bit_cast_value<double>(uint64_t(ki + 1023) << 52);
  return p * scale;
}

// cos(x) and sin(x) for |x| <= pi/2 (the cutoff function's argument pi r / (2 r_cut) for 0 <= r <= r_cut):
// cephes' polynomials on [0, pi/4], and cos(x) = sin(pi/2 - x), sin(x) = cos(pi/2 - x) above pi/4 (the
// reduction uses pi/2 split into two parts). Branch-free; |x| is clamped to pi/2 beyond.
inline void cos_sin_poly(float x, float& c, float& s) {
  const float sign = x < 0.0f ? -1.0f : 1.0f;
  float a = x < 0.0f ? -x : x;
  a = a > 1.57079632679f ? 1.57079632679f : a;
  const bool upper = a > 0.785398163397f;
  const float y = upper ? (1.57079637050628662109375f - a) + -4.37113900018624283e-8f : a;
  const float z = y * y;
  const float sy = y + y * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
  const float cy = 1.0f - 0.5f * z + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f);
  c = upper ? sy : cy;
  s = sign * (upper ? cy : sy);
}

inline void cos_sin_poly(double x, double& c, double& s) {
  const double sign = x < 0.0 ? -1.0 : 1.0;
  double a = x < 0.0 ? -x : x;
  a = a > 1.5707963267948966 ? 1.5707963267948966 : a;
  const bool upper = a > 0.78539816339744831;
  const double y = upper ? (1.57079632679489655800e+00 - a) + 6.12323399573676603587e-17 : a;
  const double z = y * y;
  double ps = 1.58962301576546568060e-10;
  ps = ps * z + -2.50507477628578072866e-8;
  ps = ps * z + 2.75573136213857245213e-6;
  ps = ps * z + -1.98412698295895385996e-4;
  ps = ps * z + 8.33333333332211858878e-3;
  ps = ps * z + -1.66666666666666307295e-1;
  double pc = -1.13585365213876817300e-11;
  pc = pc * z + 2.08757008419747316778e-9;
  pc = pc * z + -2.75573141792967388112e-7;
  pc = pc * z + 2.48015872888517045348e-5;
  pc = pc * z + -1.38888888888730564116e-3;
  pc = pc * z + 4.16666666666665929218e-2;
  const double sy = y + y * z * ps;
  const double cy = 1.0 - 0.5 * z + z * z * pc;
  c = upper ? sy : cy;
  s = sign * (upper ? cy : sy);
}

}  // namespace fastdipole::cpu
