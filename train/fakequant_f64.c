/* train/fakequant.h in f64: the gradient check's reference. */
#define REAL double
#define SFX f64
#include "train/fakequant_impl.h"
