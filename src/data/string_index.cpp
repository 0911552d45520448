// string_index.cpp: the rare paths of StringIndex (string_index.h): the
// first table, its doubling, the refusal past 2^31 - 2 ids. The lookup
// itself is inline in the header.
#include "sasrec/string_index.h"

#include "sasrec/error.h"

namespace sasrec::text_import {

StringIndex::StringIndex() {
  starts_.push_back(0);
  slots_.resize(1024);
  mask_ = 1023;
}

void StringIndex::too_many() { SASREC_FAIL(Input, "more than 2^31 - 2 distinct ids; split the input"); }

void StringIndex::grow() {
  PodBuf<Slot> bigger((mask_ + 1) * 2);  // fresh pages: zero
  mask_ = bigger.size() - 1;
  for (int32_t idx = 0; idx < size(); ++idx) {
    const Key k = key_of(key(idx));
    uint64_t i = k.hash & mask_;
    while (bigger[i].index1 != 0) i = (i + 1) & mask_;
    fill(&bigger[i], k, idx);
  }
  slots_ = std::move(bigger);
}

}  // namespace sasrec::text_import
