# Loads a Vagrantfile with a stand-in for Vagrant's configure and prints, as JSON, every
# setting it makes ("vm.box" => ..., "vm.provider.libvirt.memory" => ..., calls with their
# arguments): what the Vagrantfile does with its environment variables, without vagrant.
require "json"

$settings = {}

class Recorder
  def initialize(path = [])
    @path = path
  end

  def method_missing(name, *args, **kw, &block)
    key = (@path + [name.to_s]).join(".")
    if block
      sub = Recorder.new(@path + [name.to_s, args.first.to_s])
      $settings[key + "." + args.first.to_s] = { "args" => args.drop(1), "kw" => kw }
      block.call(sub)
    elsif name.to_s.end_with?("=")
      $settings[key.chomp("=")] = args.first
    elsif args.empty? && kw.empty?
      return Recorder.new(@path + [name.to_s])
    else
      ($settings[key] ||= []) << { "args" => args, "kw" => kw }
    end
    nil
  end

  def respond_to_missing?(*)
    true
  end
end

module Vagrant
  def self.configure(_version)
    yield Recorder.new
  end
end

load ARGV.fetch(0)
puts JSON.generate($settings)
