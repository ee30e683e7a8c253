// nn.Sequential: children named "0", "1", ... applied in order.
#pragma once

#include <initializer_list>
#include <memory>
#include <vector>

#include "layers/module.h"

namespace kasmina::nn {

class Sequential : public Module {
public:
    Sequential() = default;
    Sequential(std::initializer_list<std::shared_ptr<Module>> modules);
    std::string type_name() const override { return "Sequential"; }
    Tensor forward(const Tensor& input) override;
    void push_back(std::shared_ptr<Module> module);
    size_t size() const { return named_children().size(); }
    std::shared_ptr<Module> operator[](size_t index) const;
};

}  // namespace kasmina::nn
