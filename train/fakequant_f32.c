/* train/fakequant.h in f32: what QAT runs. */
#define REAL float
#define SFX f32
#include "train/fakequant_impl.h"
